//! PostgreSQL for the database profile.
//!
//! The database profile reads `pg_stat_statements` from the service's
//! database. When an audit needs a database and none is given (the bundled
//! demo, the tests), [`private::PrivatePostgres`] starts a throwaway server
//! that nobody else can reach and that disappears with the agent.

pub mod private;
