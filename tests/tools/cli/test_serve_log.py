"""--serve's log: removed after a run that went well, kept (and named) when the server
or the run failed, so the reason can be read."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import click
import pytest

from cosmosage.dataprep.synth import serve
from cosmosage.tools.cli.jobs import endpoint_for


def fake_server(fails: bool):
    @contextlib.contextmanager
    def transformers_serve(folder, cache, continuous_batching=False):
        (Path(cache) / "serve.log").write_text("loading the model\n")
        if fails:
            raise RuntimeError("server exited with 1: no config.json")
        yield type("S", (), {"base_url": "http://127.0.0.1:1/v1", "model": str(folder)})()

    return transformers_serve


@pytest.mark.parametrize("fails", [False, True])
def test_the_serve_log_is_kept_only_when_it_failed(tmp_path, monkeypatch, capsys, fails):
    monkeypatch.setattr(serve, "transformers_serve", fake_server(fails))
    with contextlib.ExitStack() as stack:
        if fails:
            stack.enter_context(pytest.raises(RuntimeError))
        with click.Context(click.Command("x")), endpoint_for(None, None, tmp_path, "K", 1.0) as ep:
            assert ep.base_url.startswith("http://127.0.0.1")
    err = capsys.readouterr().err
    log = Path(re.search(r"\(log: (\S+serve\.log), kept if it fails\)", err).group(1))
    assert log.exists() == fails
    assert (f"the server's log is kept: {log}" in err) == fails
    if fails:
        import shutil

        shutil.rmtree(log.parent)
