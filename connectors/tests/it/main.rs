//! Connectors against real HTTP on loopback: the WeChat mock, a webhook receiver, a file.

mod file;
mod push_properties;
mod webhook;
mod wechat;
