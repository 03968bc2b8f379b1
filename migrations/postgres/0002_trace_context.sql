-- The W3C trace context of a ticket's creation: everything done for the ticket later (in
-- any service) joins that trace.
ALTER TABLE tickets ADD COLUMN trace_context TEXT NOT NULL DEFAULT '';
