//! `tracing` wants a constant level at each callsite; the policy's levels are values. These macros
//! expand one callsite per level and pick the one that matches.

/// An event at a level chosen at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            tracing::Level::ERROR => tracing::event!(target: "integration_log", tracing::Level::ERROR, $($rest)+),
            tracing::Level::WARN => tracing::event!(target: "integration_log", tracing::Level::WARN, $($rest)+),
            tracing::Level::INFO => tracing::event!(target: "integration_log", tracing::Level::INFO, $($rest)+),
            tracing::Level::DEBUG => tracing::event!(target: "integration_log", tracing::Level::DEBUG, $($rest)+),
            _ => tracing::event!(target: "integration_log", tracing::Level::TRACE, $($rest)+),
        }
    };
}

/// Whether an event of this crate at a level chosen at run time would be recorded.
macro_rules! enabled_at {
    ($level:expr) => {
        match $level {
            tracing::Level::ERROR => tracing::enabled!(target: "integration_log", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "integration_log", tracing::Level::WARN),
            tracing::Level::INFO => tracing::enabled!(target: "integration_log", tracing::Level::INFO),
            tracing::Level::DEBUG => tracing::enabled!(target: "integration_log", tracing::Level::DEBUG),
            _ => tracing::enabled!(target: "integration_log", tracing::Level::TRACE),
        }
    };
}

/// Whether an event (not a span) of this crate at a level chosen at run time would be recorded.
macro_rules! event_enabled_at {
    ($level:expr) => {
        match $level {
            tracing::Level::ERROR => tracing::event_enabled!(target: "integration_log", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::event_enabled!(target: "integration_log", tracing::Level::WARN),
            tracing::Level::INFO => tracing::event_enabled!(target: "integration_log", tracing::Level::INFO),
            tracing::Level::DEBUG => tracing::event_enabled!(target: "integration_log", tracing::Level::DEBUG),
            _ => tracing::event_enabled!(target: "integration_log", tracing::Level::TRACE),
        }
    };
}

/// Whether a span of this crate at a level chosen at run time would be recorded.
macro_rules! span_enabled_at {
    ($level:expr) => {
        match $level {
            tracing::Level::ERROR => tracing::span_enabled!(target: "integration_log", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::span_enabled!(target: "integration_log", tracing::Level::WARN),
            tracing::Level::INFO => tracing::span_enabled!(target: "integration_log", tracing::Level::INFO),
            tracing::Level::DEBUG => tracing::span_enabled!(target: "integration_log", tracing::Level::DEBUG),
            _ => tracing::span_enabled!(target: "integration_log", tracing::Level::TRACE),
        }
    };
}
