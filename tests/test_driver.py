"""Whose fault a failed export was, decided on real Ray failures (a local Ray in this process): the
laptop resubmits a run only when the failure came from outside the recipe."""

from __future__ import annotations

import os

import pytest

from orchestrator.cluster.driver import export_lost_to_infrastructure
from orchestrator.errors import LatheError


@pytest.fixture(scope="module")
def local_ray():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()  # ends the local Ray this fixture started, nothing else


def _failure(ray, fn) -> BaseException:
    with pytest.raises(ray.exceptions.RayError) as err:
        ray.get(ray.remote(max_retries=0)(fn).remote())
    return err.value


def _store_gone() -> None:
    from botocore.exceptions import EndpointConnectionError

    raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/artifacts")  # after boto3's retries


def _upload_gave_up() -> None:
    from boto3.exceptions import S3UploadFailedError

    raise S3UploadFailedError("Failed to upload model-q4_k_m.gguf to artifacts/r/export/gguf: Could not connect")


def _disk_full() -> None:
    raise OSError(28, "No space left on device")


def _converter_refuses() -> None:
    raise LatheError("the converter refused the tokenizer: BPE pre-tokenizer was not recognized")


def _node_lost() -> None:
    os._exit(1)  # as a worker killed with its node


def test_an_export_lost_to_the_store_or_its_node_is_infrastructure(local_ray) -> None:
    for fn in (_store_gone, _upload_gave_up, _disk_full, _node_lost):
        error = _failure(local_ray, fn)
        assert export_lost_to_infrastructure(error), (fn.__name__, type(error).__name__)


def test_an_export_the_recipe_broke_is_not(local_ray) -> None:
    error = _failure(local_ray, _converter_refuses)
    assert not export_lost_to_infrastructure(error), type(error).__name__
    assert not export_lost_to_infrastructure(ValueError("not a Ray failure at all"))
