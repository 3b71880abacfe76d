-- One-time setup of the shardkeep database (run as a superuser; psql -v host_password=...).
-- shardkeep_admin owns the schema and runs migrations; shardkeep_host (the service)
-- may read and write rows but not change the schema or drop data wholesale.
CREATE ROLE shardkeep_admin LOGIN PASSWORD :'admin_password';
CREATE ROLE shardkeep_host LOGIN PASSWORD :'host_password' CONNECTION LIMIT 100;
CREATE DATABASE shardkeep OWNER shardkeep_admin ENCODING 'UTF8' TEMPLATE template0;
\connect shardkeep
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE shardkeep FROM PUBLIC;
GRANT CONNECT ON DATABASE shardkeep TO shardkeep_host;
GRANT USAGE ON SCHEMA public TO shardkeep_host;
-- Tables created later by shardkeep_admin (migrations) get row-level rights for the service.
ALTER DEFAULT PRIVILEGES FOR ROLE shardkeep_admin IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO shardkeep_host;
ALTER DEFAULT PRIVILEGES FOR ROLE shardkeep_admin IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO shardkeep_host;
