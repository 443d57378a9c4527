"""Run in each Ray worker process (runtime_env worker_process_setup_hook) by tests/test_ray.py.

``install`` makes the worker die, as an out-of-memory kill would, whenever it is asked to embed the text in
``$BERTFEAT_TEST_POISON``: a deterministic crash, the kind Ray Data's default unbounded retries loop on.
"""
import os


def install():
    from bertfeat.extract import pipeline

    poison = os.environ["BERTFEAT_TEST_POISON"]
    original = pipeline.Embedder.__call__

    def call(self, texts, *args, **kwargs):
        if poison in texts:
            os._exit(137)  # no exception, no cleanup: the process is simply gone
        return original(self, texts, *args, **kwargs)

    pipeline.Embedder.__call__ = call
