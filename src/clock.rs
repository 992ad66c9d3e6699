//! The wall clock. The model never reads it (it is handed `now`, so that it stays pure and its
//! tests choose the time); the layers around it read it here.

/// Unix time now.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}
