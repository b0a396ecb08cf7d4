"""herd-supervisor --status finds a server's own listening socket among
every listening socket on its port (docs/PROTOCOL.md, "Processes and
files"): it kept the first 16 LISTEN entries of /proc/net/tcp for the
port and missed the server's when other programs listened on the same
port on other addresses, so a healthy server showed LISTENING "no".
"""
import socket

from conftest import wait_for
from test_cov_supervisor import rows, sup_herd  # noqa: F401 (a fixture)

OTHERS = 500   # listeners of another program on the port: 127.0.x.y, never 127.0.0.1


def test_status_sees_the_server_among_many_listeners_on_its_port(sup_herd):
    h = sup_herd({"Bailey": []}).start()
    port = h.ports["Bailey"]
    addrs = [f"127.0.{x // 250}.{x % 250 + 2}" for x in range(OTHERS)]
    others = []
    try:
        for a in addrs:
            s = socket.socket()
            others.append(s)
            s.bind((a, port))
            s.listen(1)
        with open("/proc/net/tcp") as f:
            listening = sum(line.split()[1].endswith(":%04X" % port) and line.split()[3] == "0A"
                            for line in f.readlines()[1:])
        assert listening == OTHERS + 1, listening
        last = [None]

        def up():
            last[0] = h.status()
            return last[0].returncode == 0
        assert wait_for(up, 10, step=0.2), last[0].stdout + last[0].stderr
        assert rows(last[0].stdout)["Bailey"][5] == "yes", last[0].stdout
        assert "1 of 1 servers listening" in last[0].stdout
    finally:
        for s in others:
            s.close()
