-- PostgreSQL's version of 0011_node_leases.sql: leases are the nodes' (their heartbeats), so
-- the index of per-run lease expiries goes; runs.lease_expires stays, unused.
DROP INDEX IF EXISTS runs_leased;
