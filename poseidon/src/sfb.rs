//! Sufficient-factor broadcasting (placeholder, filled below).
