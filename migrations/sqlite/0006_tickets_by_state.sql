-- Listing tickets by state in id order (the console's and `mc list --state`'s pages) walks
-- this index instead of sorting every ticket in that state (#14: 5.5 → 10.1 ms per page of
-- done tickets at 100k before). Postgres plans the same list flat without it.
CREATE INDEX tickets_state ON tickets (state, id);
