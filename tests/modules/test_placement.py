"""Placement presets and ``resolve``: what each preset means and how bad placements are reported."""

import pytest

from modules.placement import DEFAULT_PRESETS, PRESETS, fitting_presets, resolve

RESNET50 = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}
RESNET18 = {"res2": 2, "res3": 2, "res4": 2, "res5": 2}


@pytest.mark.parametrize(("preset", "expected", "blocks"), [
    ("nl-1", {"res4": [4]}, 1),
    ("nl-5", {"res3": [1, 3], "res4": [1, 3, 5]}, 5),
    ("nl-10", {"res3": [0, 1, 2, 3], "res4": [0, 1, 2, 3, 4, 5]}, 10),
    ("se-all", {"res2": [0, 1, 2], "res3": [0, 1, 2, 3], "res4": list(range(6)), "res5": [0, 1, 2]}, 16),
    ("se-stage2", {"res2": [0, 1, 2]}, 3),
    ("se-stage3", {"res3": [0, 1, 2, 3]}, 4),
    ("se-stage4", {"res4": list(range(6))}, 6),
    ("sa-stage5", {"res5": [0, 1, 2]}, 3),
    ("sa-all", {"res2": [0, 1, 2], "res3": [0, 1, 2, 3], "res4": list(range(6)), "res5": [0, 1, 2]}, 16),
])
def test_preset_resolves_on_resnet50_to_the_papers_blocks(preset, expected, blocks):
    resolved = resolve(preset, RESNET50)
    assert resolved == expected
    assert sum(len(indices) for indices in resolved.values()) == blocks


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_fits_resnet50_depths(preset):
    assert resolve(preset, RESNET50)


def test_default_presets_are_presets():
    assert set(DEFAULT_PRESETS) == {"nonlocal", "se", "selfattn"}
    assert all(name in PRESETS for name in DEFAULT_PRESETS.values())


def test_mapping_is_sorted_in_stage_order_and_all_expands():
    resolved = resolve({"res4": [5, 1], "res2": "all", "res5": []}, RESNET50)
    assert list(resolved) == ["res2", "res4"]
    assert resolved == {"res2": [0, 1, 2], "res4": [1, 5]}


def test_none_means_no_blocks():
    assert resolve(None, RESNET50) == {}


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="unknown placement preset 'nl-7'") as error:
        resolve("nl-7", RESNET50)
    for name in PRESETS:
        assert name in str(error.value)


def test_unknown_stage_lists_stages_with_index_ranges():
    with pytest.raises(ValueError, match="unknown stage 'res6'") as error:
        resolve({"res6": [0]}, RESNET50)
    assert "res2 (blocks 0-2), res3 (blocks 0-3), res4 (blocks 0-5), res5 (blocks 0-2)" in str(error.value)


def test_out_of_range_index_names_the_valid_range():
    with pytest.raises(ValueError, match=r"res3 index 4 is out of range \(valid 0-3\)"):
        resolve({"res3": [1, 4]}, RESNET50)
    with pytest.raises(ValueError, match=r"res3 index -1 is out of range"):
        resolve({"res3": [-1]}, RESNET50)


def test_preset_that_does_not_fit_names_the_preset_and_the_stages():
    with pytest.raises(ValueError, match=r"placement preset 'nl-5': res3 index 3 is out of range") as error:
        resolve("nl-5", RESNET18)
    assert "res3 (blocks 0-1)" in str(error.value)


def test_duplicate_index_is_an_error():
    with pytest.raises(ValueError, match=r"res4 lists block\(s\) \[3\] more than once"):
        resolve({"res4": [3, 1, 3]}, RESNET50)


@pytest.mark.parametrize("indices", ["some", 3, [1.0], [True], {"a": 1}])
def test_indices_must_be_a_list_of_ints_or_all(indices):
    with pytest.raises(ValueError, match="res3"):
        resolve({"res3": indices}, RESNET50)


def test_placement_of_wrong_type_is_an_error():
    with pytest.raises(ValueError, match="preset name or a mapping"):
        resolve(["res3"], RESNET50)


def test_fitting_presets_on_resnet18_excludes_the_nonlocal_ones():
    assert fitting_presets(RESNET18, prefix="nl-") == []
    assert "se-all" in fitting_presets(RESNET18)
    assert fitting_presets(RESNET50) == list(PRESETS)
