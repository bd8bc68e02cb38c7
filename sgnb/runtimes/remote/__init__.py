"""Any SGLang HTTP server (``sglang.launch_server``, a container, a router, ``sgnb serve``)."""

from sgnb.runtimes.remote.runtime import RemoteRuntime, wait_for_server

__all__ = ["RemoteRuntime", "wait_for_server"]
