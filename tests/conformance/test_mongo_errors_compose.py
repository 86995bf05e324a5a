"""The three-node replica set variant of the compose file (no Docker engine runs here: its content is what can be
checked): three members in one set, initiated once, the server on all three with majority writes.

https://www.mongodb.com/docs/manual/tutorial/deploy-replica-set/
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

ROOT = Path(__file__).parent.parent.parent


def test_three_node_variant_is_one_replica_set_the_server_reaches_in_full() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.mongo3.yml").read_text())
    services = compose["services"]
    nodes = [services[f"mongo{n}"] for n in (1, 2, 3)]
    for node in nodes:
        assert node["command"] == ["--replSet", "rs0", "--bind_ip_all"] and node["image"].startswith("mongo:")
    assert len({node["volumes"][0] for node in nodes}) == 3  # a data volume each
    initiate = " ".join(services["mongo1"]["healthcheck"]["test"])
    assert all(f"host: 'mongo{n}:27017'" in initiate for n in (1, 2, 3)) and "_id: 'rs0'" in initiate
    server = services["careloop"]
    assert server["depends_on"]["mongo1"]["condition"] == "service_healthy"
    url = urlparse(server["environment"]["CARELOOP_MONGODB_URL"])
    assert url.netloc == "mongo1:27017,mongo2:27017,mongo3:27017"
    options = parse_qs(url.query)
    assert options["replicaSet"] == ["rs0"] and options["w"] == ["majority"]
    assert "/readyz" in " ".join(server["healthcheck"]["test"])
    assert set(compose["volumes"]) == {"mongo1-data", "mongo2-data", "mongo3-data", "careloop-data"}
