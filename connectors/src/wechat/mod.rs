//! WeChat mini-program subscription messages (`subscribeMessage.send`).

pub mod errcode;
pub mod keywords;
pub mod push;
