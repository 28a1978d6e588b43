"""The `attnlab jobs` client's own checks, before it reaches any service."""

from service.cli import main


def test_jobs_submit_names_the_broken_yaml_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: {family: se\n")
    assert main(["jobs", "--url", "http://127.0.0.1:9", "submit", "--config", str(path)]) == 2
    assert f"{path}: not valid YAML" in capsys.readouterr().err
