//! Delivery connectors.
