//! The configuration model, its validation and its sources (TOML, environment, PostgreSQL): filled by its own issue.
