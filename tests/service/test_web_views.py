"""The web page's pieces in process: what a row and a detail say, and that its reads carry the caller's token."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.routes.web import Api
from service.web import views

JOB = {"id": 7, "kind": "train", "name": "se-r18", "state": "RUNNING", "attempts": 2,
       "created_at": "2026-11-29T10:00:00Z", "started_at": "2026-11-29T10:00:05Z", "finished_at": None,
       "runner": "LocalProcessRunner", "mlflow_run_id": "a" * 32, "registered_model": "se r18/x",
       "model_version": "3", "message": None}


def test_progress_counts_epochs_from_one_and_steps_against_the_budget():
    detail = {**JOB, "config": {"trainer": {"max_epochs": 3, "max_steps": 400}}, "step": 100,
              "metrics": {"epoch": 0.0, "train/loss": 0.5, "val/acc": 0.81234}}
    row = views.row(JOB, detail)
    assert row.progress.text == "epoch 1/3 · step 100/400" and row.progress.fraction == 0.25
    assert row.metric == "val/acc 0.8123"
    finished = views.progress({**JOB, "state": "SUCCEEDED"}, {**detail, "metrics": {"epoch": 3.0}}, None)
    assert finished.text.startswith("epoch 3/3") and finished.fraction == 1.0  # Lightning logs max_epochs at the end
    assert views.progress({**JOB, "state": "QUEUED"}, None, None).text == "queued"


def test_search_progress_counts_finished_trials_of_the_planned():
    trials = {"planned": 4, "trials": [{"status": "FINISHED"}, {"status": "KILLED"}, {"status": "RUNNING"}]}
    progress = views.progress({**JOB, "kind": "search"}, None, trials)
    assert progress.text == "2 of 4 trials, 1 running" and progress.fraction == 0.5


def test_links_point_into_the_mlflow_ui_hash_routes_with_names_quoted():
    links = views.links(JOB, "http://127.0.0.1:5000/")
    assert links.run == f"http://127.0.0.1:5000/#/runs/{'a' * 32}"
    assert links.model == "http://127.0.0.1:5000/#/models/se%20r18%2Fx"
    assert links.version == "http://127.0.0.1:5000/#/models/se%20r18%2Fx/versions/3"
    assert views.links(JOB, None).run is None


def test_ablation_cells_and_trial_names_read_as_the_report_writes_them():
    assert views.cell_text({"value": 0.91, "stopped_early": True}) == "0.9100*"
    assert views.cell_text({"value": None, "over_budget": True}) == "over budget"
    assert views.cell_text({"value": None}) == "—"
    assert views.trial_label("se-ablation-0fc66_00001", "se-ablation") == "0fc66_00001"


def test_the_pages_reads_go_to_the_api_with_the_callers_own_authorization():
    app = FastAPI()

    @app.get("/echo")
    async def echo(request: Request) -> dict:
        return {"authorization": request.headers.get("authorization")}

    @app.get("/page")
    async def page(request: Request) -> dict:
        return (await Api(request).get("/echo"))[1]

    with TestClient(app) as client:
        assert client.get("/page", headers={"Authorization": "Bearer user-token"}).json() == {
            "authorization": "Bearer user-token"}
        assert client.get("/page").json() == {"authorization": None}
