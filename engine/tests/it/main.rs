//! Integration tests of the engine, one module per pipeline stage.

mod admin;
mod arbitration;
mod campaign;
mod compact;
mod console;
mod dispatch;
mod facts;
mod forget;
mod ingest;
mod migrations;
mod nodes;
mod openapi;
mod planning;
mod quickstart;
mod reliability;
mod retention;
mod security;
mod segment;
mod segments;
mod serve;
mod service;
mod structure;
mod support;
mod synth;
mod webdriver;
mod windows;
