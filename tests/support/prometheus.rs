//! A real Prometheus for tests: started on a loopback port, scraping the daemon under test.
