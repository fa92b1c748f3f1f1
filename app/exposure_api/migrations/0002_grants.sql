-- phase: expand
-- The application role reads, nothing else. {app_role} is substituted as a quoted identifier.
GRANT USAGE ON SCHEMA exposure TO {app_role};
GRANT SELECT ON exposure.flows TO {app_role};
ALTER DEFAULT PRIVILEGES IN SCHEMA exposure GRANT SELECT ON TABLES TO {app_role};
