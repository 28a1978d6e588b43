"""Search spaces, budget pruning, checks before any trial, and the ablation report (no Ray cluster)."""

import csv
import io

import pytest

from training.config import ConfigError
from tuning.budget import Cost, over_budget
from tuning.config import BudgetSpec, plan_search, trial_config, validate_search_config
from tuning.report import build_table, to_csv, to_markdown, write_report
from tuning.space import GRID_POINT_KEY, parse_space, placement_from_label, placement_labels, to_tune_space

BASE = {
    "name": "space-test",
    "data": {"kind": "image", "dataset": "fashion_mnist", "root": "/nonexistent", "batch_size": 8},
    "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-all", "reduction": 16},
}


def search_config(space, **search):
    return validate_search_config({**BASE, "search": {"space": space, **search}})


def test_placement_generator_expands_every_stage_subset_per_pattern():
    labels = placement_labels(["nl-5", {"res3": [1, 3]}, {"stages": ["res3", "res4"], "patterns": ["all", "last"]}])
    assert labels == ["nl-5", "res3:1,3", "res3:all", "res4:all", "res3:all+res4:all",
                      "res3:last", "res4:last", "res3:last+res4:last"]


def test_placement_labels_resolve_patterns_against_stage_depths():
    depths = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}
    assert placement_from_label("res3:odd+res4:odd", depths) == {"res3": [1, 3], "res4": [1, 3, 5]}
    assert placement_from_label("res4:last+res2:even", depths) == {"res4": [5], "res2": [0, 2]}
    assert placement_from_label("res3:1,3", depths) == {"res3": [1, 3]}
    assert placement_from_label("se-stage3", depths) == "se-stage3"


def test_grid_algorithm_puts_budget_filtered_points_in_one_grid_search():
    space = parse_space({"model.reduction": {"grid": [4, 8]}, "optim.lr": {"loguniform": [1e-4, 1e-1]}})
    param_space = to_tune_space(space, [{"model.reduction": 8}], "grid")
    assert param_space[GRID_POINT_KEY] == {"grid_search": [{"model.reduction": 8}]}
    assert "optim.lr" in param_space and "model.reduction" not in param_space
    for algorithm in ("random", "optuna"):  # grid values are drawn like choices
        sampled = to_tune_space(space, [{"model.reduction": 8}], algorithm)
        assert GRID_POINT_KEY not in sampled and sorted(sampled) == ["model.reduction", "optim.lr"]
        assert sorted(sampled["model.reduction"].categories) == [4, 8]


def test_trial_config_applies_dotted_paths_and_drops_blocks_for_the_baseline():
    cfg = search_config({"optim.lr": {"choice": [0.1]}})
    trial = trial_config(cfg.base_raw(), {"optim.lr": 0.01, "model.placement": "res3:last"})
    assert trial.optim.lr == 0.01 and trial.model.placement == {"res3": [1]}
    baseline = trial_config(cfg.base_raw(), {"model.family": "none"})
    assert baseline.model.placement is None and baseline.model.block == {}


@pytest.mark.parametrize("space, message", [
    ({"optim.lrr": {"choice": [0.1]}}, "unknown config field 'lrr'; fields of optim: name, lr"),
    ({"model.reduction": {"choice": []}}, "search.space.model.reduction: choice: needs at least one value"),
    ({"optim.lr": {"grid": [0.1], "choice": [0.2]}}, "give exactly one of"),
    ({"optim.lr": {"loguniform": [0.0, 0.1]}}, "loguniform: needs low > 0"),
    ({"optim": {"choice": [{}]}}, "search.space.optim: is a whole section"),
    ({"model.placement": {"grid": ["se-stage9"]}}, "value 'se-stage9'"),
    ({"model.block.squeeze": {"grid": ["avg", "median"]}}, "value 'median'"),
    ({"model.reduction": {"grid": [16, 128]}}, "128 does not divide the 64 channels of the se blocks"),
    ({"name": {"choice": ["x"]}}, "search.space.name: not searchable"),
    ({"model": {"reduction": {"grid": [4]}}}, "search.space.model: keys are dotted config paths"),
])
def test_bad_search_spaces_are_rejected_with_the_path_and_the_problem(space, message):
    with pytest.raises(ConfigError) as error:
        plan_search(search_config(space))
    assert message in str(error.value)


def test_search_section_fields_are_checked():
    with pytest.raises(ConfigError, match="search.algorithm: 'hyperband' is not one of grid, random, optuna"):
        search_config({"optim.lr": {"choice": [0.1]}}, algorithm="hyperband")
    with pytest.raises(ConfigError, match="search: required section is missing"):
        validate_search_config(dict(BASE))


def test_reduction_check_only_looks_at_stages_that_get_blocks():
    # res5 of resnet18_small has 512 channels: 128 divides it, while res2's 64 would not be divisible.
    plan = plan_search(search_config({"model.placement": {"grid": ["res5:all"]},
                                      "model.reduction": {"grid": [128]}}))
    assert plan.points == [{"model.placement": "res5:all", "model.reduction": 128}]


def test_budget_prunes_grid_points_before_training_and_says_why():
    space = {"model.placement": {"grid": ["se-stage2", "se-all"]}, "model.reduction": {"grid": [4, 16]}}
    unconstrained = plan_search(search_config(space))
    assert len(unconstrained.points) == 4 and unconstrained.pruned == []
    # SE on every stage with r=4 adds ~0.7M parameters to ResNet-18's 11.17M.
    plan = plan_search(search_config(space, budget={"max_params": 11_500_000}))
    assert {"model.placement": "se-all", "model.reduction": 4} not in plan.points
    pruned = [p for p in plan.pruned if p["model.placement"] == "se-all" and p["model.reduction"] == 4]
    assert pruned and "> max_params 11,500,000" in pruned[0]["reason"]


def test_nonlocal_activation_estimate_grows_with_the_square_of_positions():
    cfg = validate_search_config({**BASE, "model": {"family": "nonlocal", "backbone": "resnet18_small",
                                                    "placement": {"res2": [0]}, "reduction": 2},
                                  "search": {"space": {"optim.lr": {"choice": [0.1]}}}})
    from tuning.config import cost_of

    small = cost_of(cfg, BudgetSpec(input_shape=[1, 16, 16]))
    large = cost_of(cfg, BudgetSpec(input_shape=[1, 32, 32]))
    # res2 keeps the input size: N = H·W, affinity B·N·N floats (B = 8).
    assert small.nonlocal_activation_mb == pytest.approx(8 * 256 * 256 * 4 / 2**20)
    assert large.nonlocal_activation_mb == pytest.approx(16 * small.nonlocal_activation_mb)
    assert over_budget(large, BudgetSpec(max_nonlocal_activation_mb=10)).startswith("Non-local affinity 32.0 MiB")


def test_over_budget_lists_every_broken_limit():
    cost = Cost(params=2_000_000, gflops=1.5, nonlocal_activation_mb=0.0)
    reason = over_budget(cost, BudgetSpec(max_params=1_000_000, max_gflops=1.0))
    assert reason == "2,000,000 parameters > max_params 1,000,000; 1.500 GFLOPs > max_gflops 1.0"
    assert over_budget(cost, BudgetSpec(max_params=3_000_000)) is None


def ablation_trials():
    return [
        {"model.placement": "se-stage2", "model.reduction": 4, "val/acc": 0.61},
        {"model.placement": "se-stage2", "model.reduction": 4, "val/acc": 0.66},
        {"model.placement": "se-stage2", "model.reduction": 16, "val/acc": 0.40, "stopped_early": True},
        {"model.placement": "se-all", "model.reduction": 4, "val/acc": None, "over_budget": True},
        {"model.placement": "se-all", "model.reduction": 16, "val/acc": 0.70},
    ]


def test_ablation_table_is_placement_rows_by_reduction_columns_with_the_best_in_bold():
    table = build_table(ablation_trials(), metric="val/acc", mode="max", row_name="model.placement",
                        column_name="model.reduction", columns=[4, 16])
    markdown = to_markdown(table)
    assert "| placement | r=4 | r=16 |" in markdown
    assert "| se-stage2 | 0.6600 | 0.4000* |" in markdown
    assert "| se-all | over budget | **0.7000** |" in markdown
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert rows[0] == {"model.placement": "se-stage2", "model.reduction": "4", "val/acc": "0.66",
                       "stopped_early": "0", "over_budget": "0", "trials": "2"}


def test_ablation_report_writes_markdown_csv_and_a_heatmap(tmp_path):
    table = build_table(ablation_trials(), metric="val/acc", mode="max", row_name="model.placement",
                        column_name="model.reduction")
    paths = write_report(table, tmp_path)
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["markdown"].read_text() == to_markdown(table)
    assert table.best() == ("se-all", "16")


def test_tune_command_rejects_a_bad_space_before_starting_anything(tmp_path, capsys, attnlab_home):
    import yaml

    from service.cli import main

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({**BASE, "search": {"space": {"model.reduction": {"grid": [16, 128]},
                                                                   "optim.momentum": {"choice": []}}}}))
    assert main(["tune", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("invalid search space:")
    assert "search.space.optim.momentum: choice: needs at least one value" in error
    assert not (attnlab_home / "searches").exists()


def test_tune_check_lists_the_grid_after_budget_pruning(tmp_path, capsys):
    import yaml

    from service.cli import main

    config = tmp_path / "search.yaml"
    space = {"model.placement": {"grid": ["se-stage2", "se-all"]}, "model.reduction": {"grid": [4]}}
    config.write_text(yaml.safe_dump({**BASE, "search": {"space": space, "budget": {"max_params": 11_500_000}}}))
    assert main(["tune", "--config", str(config), "--check"]) == 0
    output = capsys.readouterr().out
    assert "1 grid point(s) to train, 1 pruned by the budget" in output
    assert "pruned: model.placement=se-all, model.reduction=4, reason=" in output
