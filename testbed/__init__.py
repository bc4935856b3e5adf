"""Namespace test harness shared by the tests, the demo and the bench (not packaged).

sandbox.py builds the lan/node/pod namespaces with a real DHCP server; cnidriver.py drives
the plugin like a runtime; dhcpservers.py configures the other DHCP servers; fakedhcp.py is
a scriptable misbehaving server; ipjson.py parses `ip -j` output into uplink snapshots.
Importable from the repository root (pytest's rootdir, scripts insert it on sys.path).
"""
