"""Run localstripe bound to one address (127.0.0.1 by default).

localstripe's own `localstripe --port N` has no bind option: it listens on [::] (every
interface, IPv4 and IPv6), and it saves its state to /tmp/localstripe.pickle, a file shared by
every checkout on the machine. This wrapper starts the same aiohttp app on the address given,
and keeps state in memory unless --state-file is passed. Used by scripts/stack.sh.
"""

import argparse
import logging
import pickle
import socket

from aiohttp import web
from localstripe import resources, server


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--state-file", default=None,
                        help="persist objects here across restarts (default: memory only)")
    args = parser.parse_args()

    def load(store):
        if args.state_file is None:
            return
        try:
            with open(args.state_file, "rb") as f:
                old = pickle.load(f)
        except FileNotFoundError:
            return
        store.clear()
        store.update(old)

    def dump(store):
        if args.state_file is not None:
            with open(args.state_file, "wb") as f:
                pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    resources.store.try_load_from_disk()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))

    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler())
    print(f"localstripe listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(server.app, sock=sock, access_log=logger, print=None)


if __name__ == "__main__":
    main()
