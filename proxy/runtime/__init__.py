"""The process edge: worker processes sharing one port (patching mitmproxy's listener), health
endpoints and the metrics listener. Does network I/O and knows mitmproxy."""
