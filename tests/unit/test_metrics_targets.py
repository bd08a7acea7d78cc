"""Scrape-target files and the generated Prometheus config, without running Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controller.local.prometheus_server import (
    JOB_NAME,
    PrometheusServer,
    PrometheusServerError,
    read_pidfile,
    remove_targets,
    render_config,
    write_targets,
)


def test_write_targets_writes_one_file_sd_group(tmp_path: Path) -> None:
    path = write_targets(
        tmp_path, "router-iris", ["127.0.0.1:8001", "localhost:9000"], {"component": "router"}
    )
    assert path == tmp_path / "targets" / "router-iris.json"
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:8001", "localhost:9000"], "labels": {"component": "router"}}
    ]


def test_write_targets_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_targets(tmp_path, "a", ["127.0.0.1:1"], {})
    write_targets(tmp_path, "a", ["127.0.0.1:2"], {"__metrics_path__": "/prom"})
    assert sorted(p.name for p in (tmp_path / "targets").iterdir()) == ["a.json"]
    assert json.loads((tmp_path / "targets" / "a.json").read_text()) == [
        {"targets": ["127.0.0.1:2"], "labels": {"__metrics_path__": "/prom"}}
    ]


def test_remove_targets_reports_whether_there_was_a_file(tmp_path: Path) -> None:
    write_targets(tmp_path, "a", ["127.0.0.1:1"], {})
    assert remove_targets(tmp_path, "a") is True
    assert remove_targets(tmp_path, "a") is False
    assert list((tmp_path / "targets").iterdir()) == []


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x y"])
def test_bad_target_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(PrometheusServerError, match="invalid target file name"):
        write_targets(tmp_path, name, ["127.0.0.1:1"], {})
    with pytest.raises(PrometheusServerError, match="invalid target file name"):
        remove_targets(tmp_path, name)
    assert not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize(
    "target", ["127.0.0.1", "http://127.0.0.1:80", "127.0.0.1:80/metrics", ":80", "a b:1"]
)
def test_bad_targets_are_rejected(tmp_path: Path, target: str) -> None:
    with pytest.raises(PrometheusServerError, match=r"invalid scrape target .*expected 'host:port'"):
        write_targets(tmp_path, "a", [target], {})
    assert not (tmp_path / "targets" / "a.json").exists()


def test_bad_labels_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(PrometheusServerError, match="invalid label name 'bad-name'"):
        write_targets(tmp_path, "a", ["127.0.0.1:1"], {"bad-name": "x"})
    with pytest.raises(PrometheusServerError, match="label 'n' .* must be a string"):
        write_targets(tmp_path, "a", ["127.0.0.1:1"], {"n": 3})  # type: ignore[dict-item]


def test_config_has_one_file_sd_job_over_the_targets_dir(tmp_path: Path) -> None:
    config = yaml.safe_load(render_config(tmp_path, "1s"))
    assert config["global"]["scrape_interval"] == "1s"
    assert config["global"]["scrape_timeout"] == "1s"
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB_NAME
    assert job["honor_labels"] is True
    [sd] = job["file_sd_configs"]
    assert sd["files"] == [str(tmp_path.absolute() / "targets" / "*.json")]


@pytest.mark.parametrize(
    ("interval", "written"), [("1s", "1s"), (2, "2s"), (1.5, "1500ms"), ("250ms", "250ms"), ("1m", "60s")]
)
def test_scrape_interval_is_written_in_prometheus_units(
    tmp_path: Path, interval: str | float, written: str
) -> None:
    assert yaml.safe_load(render_config(tmp_path, interval))["global"]["scrape_interval"] == written


@pytest.mark.parametrize("interval", ["soon", "0s", -1, "1d"])
def test_bad_scrape_interval_is_rejected_before_anything_runs(tmp_path: Path, interval: str | float) -> None:
    with pytest.raises((PrometheusServerError, ValueError)):
        PrometheusServer(tmp_path, port=9090, scrape_interval=interval)
    assert list(tmp_path.iterdir()) == []


def test_pidfile_of_another_program_or_garbage_reads_as_none(tmp_path: Path) -> None:
    # pid 1 exists but is not a Prometheus for this data dir: never treat it as ours.
    (tmp_path / "prometheus.pid").write_text(json.dumps({"pid": 1, "host": "127.0.0.1", "port": 9090}))
    assert read_pidfile(tmp_path) is None
    (tmp_path / "prometheus.pid").write_text("not json")
    assert read_pidfile(tmp_path) is None
    (tmp_path / "prometheus.pid").unlink()
    assert read_pidfile(tmp_path) is None
