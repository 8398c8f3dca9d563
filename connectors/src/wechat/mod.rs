//! WeChat mini-program subscription messages (`subscribeMessage.send`).

pub mod client;
mod config;
pub mod crypto;
pub mod errcode;
pub mod keywords;
pub mod mock;
pub mod push;
pub mod receiver;
pub mod templates;
mod token;

pub use config::{Lang, MiniprogramState, TokenMode, WechatConfig};
