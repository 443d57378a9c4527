"""`bertfeat serve`: a real server process on a free loopback port, real model folders (a plain and a pair
model), answers checked against `bertfeat predict`; bad requests, a client that leaves, SIGTERM in flight."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from bertfeat.cli import main
from bertfeat.serve import STREAM_BATCH
from conftest import DEMO_TEST, DEMO_TRAIN, ROOT

pytestmark = pytest.mark.xdist_group("serve")  # servers and fits on one worker: the cores are few
TEXTS = ["my parcel is two weeks late", "I forgot my password", "the refund never came", "screen flickers",
         "charged twice this month", "where is my order"]


def _fit(tmp, name, frame, *flags):
    frame.iloc[:120].to_csv(tmp / f"{name}-train.csv", index=False)
    frame.iloc[120:160].to_csv(tmp / f"{name}-test.csv", index=False)
    assert main(["fit", "--train", str(tmp / f"{name}-train.csv"), "--test", str(tmp / f"{name}-test.csv"),
                 "--out", str(tmp / name), "--cache-dir", str(tmp / "cache"), "--quiet", *flags]) == 0
    return str(tmp / name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-models")
    demo = pd.concat([pd.read_csv(DEMO_TRAIN), pd.read_csv(DEMO_TEST)])
    pairs = demo.assign(channel=["email", "chat"] * (len(demo) // 2), message=demo["text"])
    tagged = demo.assign(tags=[f"{lab};question" if "?" in t else lab for t, lab in zip(demo["text"], demo["label"])])
    return {"plain": _fit(tmp, "plain", demo),
            "pair": _fit(tmp, "pair", pairs[["channel", "message", "label"]], "--text-col", "channel",
                         "--pair-col", "message"),
            "multi": _fit(tmp, "multi", tagged[["text", "tags"]], "--label-col", "tags", "--label-sep", ";",
                          "--head", "torch")}


class Server:
    """`python cli.py serve ARGS` on a free loopback port, ready (/health 200) when constructed."""

    def __init__(self, tmp_path, *args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(tmp_path / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "serve", "--port", str(self.port),
                                      *args], cwd=ROOT, stdout=self.log, stderr=self.log,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}: {self.stderr()}"
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready in 180 s: {self.stderr()}")

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def request(self, path, body=None, data=None, timeout=120):
        data = json.dumps(body).encode() if body is not None else data
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method="GET" if data is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        text = raw.decode()
        return status, json.loads(text) if text.startswith(("{", "[")) else text

    def get(self, path):
        return self.request(path)

    def metric(self, name):
        """The value of a metric line in /metrics (0 if absent)."""
        match = re.search(rf"^{re.escape(name)} (\S+)$", self.get("/metrics")[1], flags=re.M)
        return float(match.group(1)) if match else 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"), "--model-dir", f"plain={models['plain']}",
               "--model-dir", f"pair={models['pair']}", "--model-dir", f"multi={models['multi']}",
               "--max-texts", "64", "--max-text-chars", "500",
               "--max-body", "20000", "--max-wait-ms", "20")
    yield s
    assert s.stop() == 0, s.stderr()


def _predict_cli(model_dir, texts, pairs=None, capsys=None):
    argv = ["predict", "--model-dir", model_dir, "--json", "--quiet"]
    for i, text in enumerate(texts):
        argv += ["--text", text] + (["--pair", pairs[i]] if pairs else [])
    capsys.readouterr()
    assert main(argv) == 0
    return [row["label"] if "label" in row else row["labels"] for row in json.loads(capsys.readouterr().out)]


def test_serve_answers_with_the_labels_of_predict_for_a_plain_and_a_pair_model(server, models, capsys):
    channels = ["email", "chat"] * 3
    status, answer = server.request("/models/plain/predict", {"texts": TEXTS})
    assert status == 200 and answer["labels"] == _predict_cli(models["plain"], TEXTS, capsys=capsys)
    assert answer["classes"] == ["account", "billing", "delivery", "returns", "technical"]
    assert [answer["classes"][row.index(max(row))] for row in answer["probabilities"]] == answer["labels"]
    assert all(abs(sum(row) - 1) < 1e-4 for row in answer["probabilities"])
    status, answer = server.request("/models/pair/predict", {"texts": channels, "pairs": TEXTS})
    assert status == 200 and answer["labels"] == _predict_cli(models["pair"], channels, TEXTS, capsys=capsys)
    # two models: /predict does not guess which
    status, answer = server.request("/predict", {"texts": TEXTS})
    assert status == 404 and "/models/NAME/predict" in answer["error"] and "plain, pair, multi" in answer["error"]
    info = server.get("/info")[1]["models"]
    assert info["pair"]["pair_col"] == "message" and info["plain"]["classes"] == answer_classes(server)
    assert info["plain"]["model_id"] == info["pair"]["model_id"] and info["plain"]["serving"]["precision"]
    serving = info["plain"]["serving"]  # the one-thread-per-core runtimes run a pass in sub-batches of 16
    assert serving["batch_size"] == (STREAM_BATCH if serving["runtime"] != "torch" else 128)
    assert server.get("/health") == (200, {"status": "ready", "models": ["plain", "pair", "multi"]})
    assert "/models/{name}/predict" in server.get("/openapi.json")[1]["paths"]
    assert server.get("/docs")[0] == 200


def answer_classes(server):
    return server.request("/models/plain/predict", {"texts": ["hello"]})[1]["classes"]


def test_a_multi_label_model_answers_a_list_of_labels_per_text(server, models, capsys):
    status, answer = server.request("/models/multi/predict", {"texts": TEXTS})
    assert status == 200 and answer["labels"] == _predict_cli(models["multi"], TEXTS, capsys=capsys)
    assert all(isinstance(labels, list) for labels in answer["labels"]) and "question" in answer["classes"]
    assert len(answer["probabilities"][0]) == len(answer["classes"])
    info = server.get("/info")[1]["models"]["multi"]
    assert info["task"] == "multi-label" and len(info["thresholds"]) == len(info["classes"])


def test_concurrent_requests_share_forward_passes(server):
    before = (server.metric("bertfeat_batch_texts_count"), server.metric("bertfeat_batch_texts_sum"))
    results = [None] * 24

    def client(i):
        results[i] = server.request("/models/plain/predict", {"texts": [TEXTS[i % len(TEXTS)]]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in results)
    labelled = {(TEXTS[i % len(TEXTS)], answer["labels"][0]) for i, (_, answer) in enumerate(results)}
    assert len(labelled) == len(TEXTS)  # each text got one label, whichever batch it was in
    batches = server.metric("bertfeat_batch_texts_count") - before[0]
    assert server.metric("bertfeat_batch_texts_sum") - before[1] == 24
    assert batches < 24, "every request had a forward pass of its own"
    assert server.metric('bertfeat_queue_requests') == 0


BAD = [  # (body bytes, status, words the error must hold)
    (b'{"texts": ["a"', 400, "not valid JSON"),
    (b"", 400, "body is empty"),
    (b'["a", "b"]', 422, "body"),
    (b'{"texts": "one string"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": ["a", 3]}', 422, "texts[1]: Input should be a valid string"),
    (b'{"texts": []}', 422, "texts is an empty list"),
    (b'{"text": ["a"]}', 422, "text: Extra inputs are not permitted"),
    (json.dumps({"texts": ["x"] * 65}).encode(), 422, "65 texts, more than --max-texts 64"),
    (json.dumps({"texts": ["ok", "y" * 501]}).encode(), 422, "texts[1] has 501 characters, more than --max-text-chars"),
    (json.dumps({"texts": ["z " * 12000]}).encode(), 413, "over --max-body 20000 bytes"),
    (b'{"texts": ["  \\u200b "]}', 422, "texts[0] is empty"),
    (b'{"texts": ["a"], "pairs": ["b"]}', 422, "trained on single texts"),
    (b'\xff\xfe\x00', 400, "not valid JSON"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[w for _, _, w in BAD])
def test_a_bad_request_gets_a_json_4xx_and_the_next_is_served(server, body, status, words):
    got, answer = server.request("/models/plain/predict", data=body)
    assert (got, words in answer["error"]) == (status, True), answer
    assert server.request("/models/plain/predict", {"texts": ["where is my order"]})[0] == 200


def test_pair_rules_unknown_model_and_routes_are_json_errors(server):
    assert "give \"pairs\"" in server.request("/models/pair/predict", {"texts": ["email"]})[1]["error"]
    status, answer = server.request("/models/pair/predict", {"texts": ["email", "chat"], "pairs": ["a"]})
    assert status == 422 and "2 texts but 1 pairs" in answer["error"]
    assert server.request("/models/nope/predict", {"texts": ["a"]}) == (404, {"error": "no model 'nope'; served: "
                                                                                       "plain, pair, multi"})
    assert server.get("/models/plain/predict")[0] == 405 and server.get("/nothing")[0] == 404
    assert server.metric('bertfeat_errors_total{status="405"}') >= 1


def test_a_client_that_leaves_frees_its_place(server):
    """A request queued behind a long batch, whose client hangs up, never reaches the forward pass."""
    before = (server.metric("bertfeat_disconnects_total"), server.metric("bertfeat_batch_texts_sum"))
    long = {"texts": [f"{t} and again {i}" for i in range(64) for t in TEXTS[:1]]}
    first = threading.Thread(target=server.request, args=("/models/plain/predict", long))
    first.start()
    time.sleep(0.05)
    body = json.dumps({"texts": ["left before the answer"] * 10}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /models/plain/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.02)
    first.join()
    deadline = time.time() + 10
    while server.metric("bertfeat_disconnects_total") == before[0] and time.time() < deadline:
        time.sleep(0.1)
    assert server.metric("bertfeat_disconnects_total") == before[0] + 1
    assert server.metric("bertfeat_batch_texts_sum") - before[1] == 64 + 0  # the 10 texts were dropped
    assert server.request("/models/plain/predict", {"texts": ["still here"]})[0] == 200


def test_max_batch_1_batches_nothing_and_sigterm_answers_every_request_in_flight(models, tmp_path):
    s = Server(tmp_path, "--model-dir", models["plain"], "--max-batch", "1")
    results, sent = [], threading.Barrier(13)
    texts = [f"{text} ({i})" for i in range(8) for text in TEXTS]  # 48 texts: a forward pass takes a while

    def client():
        sent.wait()
        results.append(s.request("/predict", {"texts": texts}, timeout=120))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    sent.wait()
    time.sleep(0.5)  # every connection accepted, most requests still queued
    assert s.metric("bertfeat_queue_requests") > 0
    # batching off: no forward pass took two requests (96 texts)
    assert s.metric('bertfeat_batch_texts_bucket{le="64.0"}') == s.metric("bertfeat_batch_texts_count") > 0
    assert s.stop() == 0, s.stderr()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * 12 and all(r[1]["labels"] == results[0][1]["labels"] for r in results)
    assert "Traceback" not in s.stderr()


def test_serve_refuses_bad_flags_and_folders_in_one_line(tmp_path, capsys):
    assert main(["serve", "--model-dir", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert main(["serve", "--model-dir", "a=x", "--model-dir", "a=y", "--max-batch", "0"]) == 2
    assert main(["serve", "--model-dir", "a=x", "--model-dir", "a=y"]) == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model-dir", "a=x", "--port", str(port)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "missing" in errors[0] and "--max-batch 0" in errors[1] and "two models named 'a'" in errors[2]
    assert f"cannot listen on 127.0.0.1:{port}" in errors[3] and "--port" in errors[3]
    code = ("import sys; sys.modules['fastapi'] = None; from bertfeat.cli import main; "
            "sys.exit(main(['serve', '--model-dir', 'x']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "pip install 'bertfeat[serve]'" in proc.stderr


def test_models_on_one_encoder_share_its_forward_pass_and_each_head_reads_its_own_rows(models):
    import numpy as np

    from bertfeat.batcher import Job, forward
    from bertfeat.serve import ServeOptions, load_models

    served = load_models({"a": models["plain"], "b": models["plain"], "p": models["pair"]}, ServeOptions())
    assert served["b"].shared is served["a"].clf and served["p"].shared is served["a"].clf
    channels = ["email", "chat"] * 3
    jobs = [Job(served["a"], TEXTS[:2], None, None), Job(served["p"], channels[:3], TEXTS[:3], None),
            Job(served["b"], TEXTS[2:], None, None), Job(served["a"], TEXTS[5:], None, None)]
    got = forward(jobs)
    assert [len(g) for g in got] == [2, 3, 4, 1]
    for job, proba in zip(jobs, got):
        alone = job.model.clf.predict_proba(job.texts, pairs=job.pairs)
        assert np.allclose(proba, alone, atol=1e-3) and (proba.argmax(1) == alone.argmax(1)).all()
