from cosmosage.dataprep.env import child_env


def test_a_child_with_only_local_inputs_runs_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    env = child_env(local=True, HF_HUB_CACHE="/c")
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["HF_HUB_CACHE"] == "/c"
    online = child_env(local=False)
    assert "HF_HUB_OFFLINE" not in online and "HF_DATASETS_OFFLINE" not in online


def test_the_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert child_env(local=True)["HF_HUB_OFFLINE"] == "0"
