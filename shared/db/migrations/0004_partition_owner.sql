-- Floodgate schema, version 4: on AWS the tables belong to the master user (migrations run
-- as it) and every function connects as its own role, which is not the owner. `persist`
-- still has to create a missing day's partition on demand, which needs the owner's rights:
-- the creator runs with them (SECURITY DEFINER). Safe to lend: it only ever creates
-- partitions of one fixed shape, and a fixed search_path keeps a caller from substituting
-- objects. Dropping partitions is not lent: retention runs as the owner
-- (`floodgate-admin maintain` through the master connection on AWS).
ALTER FUNCTION ensure_notification_partitions(date, date)
    SECURITY DEFINER
    SET search_path = public, pg_temp;
