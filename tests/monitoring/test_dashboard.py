"""The dashboard over time: real reports of two model versions added to an Evidently workspace,
the panels' series read back as `evidently ui` reads them, and the dashboard in headless Chromium."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.names import MODEL_FEATURES, VIEW_NAMES
from monitoring import dashboard, report
from serving.inference_log import feature_age_column
from support import free_port, reload_settings

CHROMIUM = "/usr/bin/chromium"
VERSIONS = ("1", "2")
WINDOWS = 3
START = datetime(2013, 7, 1, tzinfo=timezone.utc)


def _rows(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Served-like rows: every model feature, a label, the model's probability and decision, feature ages."""
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({c: rng.normal(10.0, 3.0, n) for c in MODEL_FEATURES})
    for c in ("temp", "dewp", "humid"):
        out[c] += shift  # the weather moves: these drift, the rest do not
    out["probability"] = rng.uniform(0.02, 0.9, n)
    out["is_late"] = (rng.uniform(0, 1, n) < out["probability"]).astype("int64")
    out["prediction"] = (out["probability"] >= 0.3).astype("int64")
    for i, view in enumerate(VIEW_NAMES):
        out[feature_age_column(view)] = rng.uniform(0, 600 * (i + 1) + 60 * shift, n)
    return out


@pytest.fixture
def dash_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STORAGE_URL", (tmp_path / "storage").as_uri())
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", str(tmp_path / "evidently"))
    monkeypatch.setenv("MLOPS_MODEL_NAME", "flight_delay_dash")
    monkeypatch.setenv("MLOPS_DRIFT_COLUMN_THRESHOLD", "0.1")  # the shifted weather columns count as drifted
    cfg = reload_settings()
    yield cfg
    monkeypatch.undo()
    reload_settings()


def _report_windows(cfg, versions=VERSIONS) -> list[tuple[dict, pd.DataFrame]]:
    """Real reports: WINDOWS windows of each version, the weather drifting more each window."""
    out = []
    for version in versions:
        v = VERSIONS.index(version)
        ref = report.Reference(version=version, run_id=f"run{version}", frame=_rows(600, seed=100 + v)
                               .drop(columns=["prediction"]), metrics={"test_roc_auc": 0.7, "test_log_loss": 0.5},
                               decision_threshold=0.3)
        for w in range(WINDOWS):
            start = START + timedelta(hours=6 * (v * WINDOWS + w))
            window = {"id": f"w{version}-{w}", "start": start.isoformat(),
                      "end": (start + timedelta(hours=1)).isoformat(), "rows": 400, "files": []}
            rows = _rows(400, seed=10 * v + w, shift=2.0 * w)
            out.append((report.build(rows, ref, model_name=cfg.model_name, window=window, cfg=cfg,
                                     min_labelled_rows=50), rows))
    return out


def _series(cfg, panel) -> list:
    """The panel's series as `evidently ui` computes them (its project manager on the same folder)."""
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local import create_local_project_manager

    manager = create_local_project_manager(str(cfg.evidently_workspace), autorefresh=False)
    filters = [SeriesFilter(metric=m.metric, tags=m.tags, metadata=m.metadata, metric_labels=m.metric_labels)
               for m in panel.values]
    project_id = dashboard._id(cfg.model_name, "project")
    return asyncio.run(manager.get_data_series(None, project_id, filters, None, None)).series


def test_each_report_adds_a_run_and_every_panel_plots_each_version(dash_env):
    cfg = dash_env
    reported = _report_windows(cfg)
    summaries = [summary for summary, _ in reported]
    ws = dashboard.workspace()
    proj = dashboard.project(ws, cfg.model_name)
    runs = ws.list_runs(proj.id)
    assert len(runs) == len(VERSIONS) * WINDOWS
    tags = sorted(tuple(ws.get_run(proj.id, r).tags) for r in runs)
    assert tags == sorted([(f"v{v}", cfg.model_name) for v in VERSIONS] * WINDOWS)

    panels = {p.title: p for p in ws.get_dashboard(proj.id).panels}
    assert list(panels) == list(dashboard.Panel.ALL)
    for title, panel in panels.items():
        series = _series(cfg, panel)
        versions = {s.params["label"] for s in series}
        assert versions == set(VERSIONS), (title, [s.params for s in series])
        assert all(any(v is not None for v in s.values) for s in series), title
    share, limit = [s for s in _series(cfg, panels[dashboard.Panel.DRIFT_SHARE]) if s.params["label"] == "1"]
    assert [round(v, 4) for v in share.values if v is not None] == [s["drift_share"] for s in summaries[:WINDOWS]]
    assert share.values[0] < share.values[WINDOWS - 1], "the weather drifts more in each window"
    assert [v for v in limit.values if v is not None] == [cfg.drift_share_threshold] * WINDOWS
    quality = _series(cfg, panels[dashboard.Panel.QUALITY])
    assert len(quality) == len(dashboard.QUALITY) * len(VERSIONS)

    # Reporting a window again replaces its run; the dashboard is not rebuilt.
    before = ws.get_dashboard(proj.id)
    assert dashboard.add_window(*reported[0]) == dashboard.add_window(*reported[0])
    assert len(ws.list_runs(proj.id)) == len(VERSIONS) * WINDOWS
    assert dashboard.project(ws, cfg.model_name).id == proj.id and ws.get_dashboard(proj.id) == before


def test_a_dashboard_failure_does_not_stop_the_report(dash_env, tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the workspace should be")
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", str(blocked))
    cfg = reload_settings()
    ref = report.Reference(version="1", run_id="r", frame=_rows(300, seed=1).drop(columns=["prediction"]))
    window = {"id": "w-broken", "start": None, "end": None, "rows": 300, "files": []}
    with caplog.at_level(logging.WARNING, logger="monitoring.dashboard"):
        summary = report.build(_rows(300, seed=2), ref, model_name=cfg.model_name, window=window, cfg=cfg,
                               min_labelled_rows=50)
    assert summary["drift_share"] is not None
    assert [r for r in caplog.records if "not added to the Evidently workspace" in r.getMessage()]


# -- the dashboard in a browser ----------------------------------------------------------------
@pytest.fixture
def evidently_ui(dash_env):
    """`evidently ui` on the test's workspace, on a free loopback port, telemetry off, started as
    `make up` starts it: the project first, then the UI (version 1's windows are already there)."""
    dashboard.prepare()
    _report_windows(dash_env, VERSIONS[:1])
    port = free_port()
    log = open(dash_env.home / f"evidently-{port}.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(dash_env.evidently_workspace),
         "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "DO_NOT_TRACK": "1"}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"evidently ui exited: {(dash_env.home / f'evidently-{port}.log').read_text()}"
            assert time.monotonic() < deadline, "evidently ui not answering after 90 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def chromium() -> str:
    """Debian's chromium: skipped without it, except under CI=true, where it must be there."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (.ci/run ensure_chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (the browser test uses no downloaded browser)")
    return CHROMIUM


@pytest.mark.integration
def test_the_dashboard_renders_every_panel_with_data(chromium, evidently_ui, dash_env, tmp_path):
    import httpx
    from playwright.sync_api import expect, sync_playwright

    # Version 2's windows are reported while the UI runs: it picks them up.
    _report_windows(dash_env, VERSIONS[1:])
    project_id = dashboard._id(dash_env.model_name, "project")
    panel = next(p for p in dashboard.panels(dash_env.model_name) if p.title == dashboard.Panel.DRIFT_SHARE)
    body = {"series_filter": [{"metric": m.metric, "tags": [], "metadata": {}, "metric_labels": m.metric_labels}
                              for m in panel.values]}
    deadline = time.monotonic() + 30
    while len(httpx.post(f"{evidently_ui}/api/v2/snapshots/{project_id}/data_series_batch", json=body,
                         timeout=10).json()["sources"]) < len(VERSIONS) * WINDOWS:
        assert time.monotonic() < deadline, "the UI did not pick up the runs added while it runs"
        time.sleep(0.5)
    shot = tmp_path / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.goto(f"{evidently_ui}/projects/{project_id}", wait_until="networkidle")
            for title in dashboard.Panel.ALL:
                expect(page.get_by_text(title, exact=True)).to_be_visible(timeout=30_000)
            # Each panel draws its lines (an SVG path per series) and no empty state.
            page.wait_for_function(
                "n => document.querySelectorAll('svg path.MuiLineElement-root').length >= n",
                arg=len(dashboard.Panel.ALL) * len(VERSIONS), timeout=30_000)
            for title in dashboard.Panel.ALL:
                card = page.locator(".MuiCard-root").filter(has=page.get_by_text(title, exact=True))
                expect(card).to_have_count(1)
                # A line per series, each version in the legend, and points on the time axis.
                assert card.locator("path.MuiLineElement-root").count() >= len(VERSIONS), title
                legend = card.locator(".MuiChartsLegend-label").all_inner_texts()
                for version in VERSIONS:
                    assert [t for t in legend if t.endswith(f" v{version}")], (title, version, legend)
                assert card.locator(".MuiMarkElement-root").count() >= WINDOWS, title
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    out = Path("/tmp/dash-shots")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "dashboard.png")


def test_make_up_serves_the_dashboard_on_loopback_without_telemetry(dash_env, capsys):
    from ops import stack

    svc = next(s for s in stack.services(dash_env) if s.name == "evidently")
    argv = " ".join(svc.argv)
    assert f"ui --workspace {dash_env.evidently_workspace} --host 127.0.0.1 --port {dash_env.evidently_port}" in argv
    assert svc.health_url == f"http://127.0.0.1:{dash_env.evidently_port}/api/version"
    assert stack._env(dash_env)["DO_NOT_TRACK"] == "1"
    stack.print_urls(dash_env)
    assert f"Dashboard    http://127.0.0.1:{dash_env.evidently_port}" in capsys.readouterr().out
