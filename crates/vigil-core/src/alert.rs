//! Alert rules and their evaluation (stub: to be written).
