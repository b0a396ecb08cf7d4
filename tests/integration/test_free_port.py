"""conftest.free_port() hands out no port of the kernel's ephemeral range
(net.ipv4.ip_local_port_range): it took the kernel's pick (bind to port 0),
one of that range, which any outgoing connection may take as its source
port while a test's server is between a stop and its restart."""
import socket

from conftest import free_port


def test_free_ports_lie_outside_the_ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split())
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    inside = [p for p in ports if low <= p <= high]
    assert not inside, f"{len(inside)} of 200 in {low}-{high}: {inside[:5]}"
    for p in ports[:20]:           # free when handed out, and still
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
