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

impl crate::Channel for WechatConfig {
    fn validate(&self) -> Result<(), String> {
        WechatConfig::validate(self)
    }

    fn connector(&self) -> Result<Box<dyn crate::Connector>, String> {
        Ok(Box::new(client::WechatConnector::new(self)?))
    }

    fn checks(&self) -> &'static dyn crate::Checks {
        &client::WechatChecks
    }

    fn receiver(&self) -> Result<Option<Box<dyn crate::inbound::Receiver>>, String> {
        Ok(receiver::WechatReceiver::from_config(self)?
            .map(|receiver| Box::new(receiver) as Box<dyn crate::inbound::Receiver>))
    }
}
