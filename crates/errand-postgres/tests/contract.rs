//! The store contract suite, run against PostgreSQL: a fresh database per
//! test, dropped afterwards. `ERRAND_TEST_PG_URL` selects the server;
//! unset, the suite is skipped with a message; set but unreachable, it fails.

mod common;
use common::postgres_store;

errand_store::store_contract_tests!(postgres_store);
