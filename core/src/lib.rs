//! pg_ab's pure logic, shared by the extension (`pg_ab`) and the relay (`pg_ab_relay`): no I/O,
//! no PostgreSQL, no async. One module per concept.

pub mod resume;
