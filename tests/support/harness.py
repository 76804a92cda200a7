"""What the two network-namespace cluster harnesses share (test_remote's hand-started Ray cluster and
test_cluster's hosts that `lathe cluster up` provisions): the network, a short Ray temp dir, the S3
server on the bridge with its bucket, the laptop's environment, and a `lathe` that keeps every
command's output for the secrets sweep."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import lathe as run_lathe
from tests.support.netns import Network
from tests.support.services import S3Server


@dataclass
class NetnsWorld:
    net: Network
    s3: S3Server
    workdir: Path
    ray_temp: Path  # the hosts' Ray temp dirs live under it: Ray's socket paths must stay under 107 bytes
    env: dict[str, str] = field(default_factory=dict)  # the laptop's environment for `lathe` commands
    said: list[str] = field(default_factory=list)  # every lathe command's output, for the secrets sweep

    def lathe(self, *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = run_lathe(*args, env=self.env, timeout=timeout)
        self.said.append(f"$ lathe {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
        if check and proc.returncode != 0:
            raise AssertionError(f"lathe {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc


@contextmanager
def netns_world(workdir: Path, prefix: str, bucket: str, credentials: dict[str, str]) -> Iterator[NetnsWorld]:
    """A bridge with the S3 server on it and `bucket` made with the laptop's `credentials`; all of it
    (and every host the caller adds to `net`) is taken down on exit."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    short = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    net = Network().up()
    server = None
    try:
        server = S3Server(net.gateway).start()
        import boto3

        # Moto accepts any credentials; the bucket is made with the laptop's, as a user would.
        boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                     aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
        yield NetnsWorld(net, server, workdir, short)
    finally:
        net.close()
        if server is not None:
            server.stop()
        shutil.rmtree(short, ignore_errors=True)
