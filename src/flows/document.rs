//! The flows document as TOML says it: every value with its place in the
//! text, so an error can name the line and column. Unknown keys are refused.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Doc {
    pub time_zone: Spanned<String>,
    #[serde(default)]
    pub schedules: BTreeMap<String, Spanned<ScheduleDoc>>,
    #[serde(default)]
    pub announcements: BTreeMap<String, Spanned<AnnouncementDoc>>,
    #[serde(default)]
    pub rules: Vec<Spanned<RuleDoc>>,
    #[serde(default)]
    pub menus: BTreeMap<String, Spanned<MenuDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDoc {
    #[serde(default)]
    pub open: Vec<Spanned<String>>,
    #[serde(default)]
    pub closed: Vec<Spanned<String>>,
    pub ical: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementDoc {
    pub file: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub name: Option<Spanned<String>>,
    pub when: Option<Spanned<WhenDoc>>,
    pub then: Spanned<ActionDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenDoc {
    pub from: Option<Vec<Spanned<String>>>,
    pub to: Option<Vec<Spanned<String>>>,
    pub open: Option<Spanned<String>>,
    pub closed: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDoc {
    pub accept: Option<Spanned<bool>>,
    pub forward: Option<Spanned<Vec<Spanned<String>>>>,
    pub voicemail: Option<Spanned<bool>>,
    pub reject: Option<Spanned<String>>,
    pub hangup: Option<Spanned<bool>>,
    pub menu: Option<Spanned<String>>,
    pub play: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuDoc {
    pub prompt: Spanned<String>,
    pub max_digits: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub options: BTreeMap<String, Spanned<ActionDoc>>,
    pub no_input: Option<Spanned<ActionDoc>>,
    pub invalid: Option<Spanned<ActionDoc>>,
}
