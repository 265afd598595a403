//! `flows::compile` on arbitrary text, then the decision core on what it
//! accepts: never panics. A refused document names at least one problem
//! with a place in the text (or none, for the whole-document limits); an
//! accepted one decides inbound calls at any time and answers dtmf pushes
//! for every menu, offered or not, with no menu past the prompt cap.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipgate_sidecar::{
    decide::{self, Action, Inputs, MenuState},
    flows::{self, Files, MAX_PROMPTS},
    settings::Settings,
    sipgate::event::Direction,
};

fuzz_target!(|text: &str| {
    let compiled = match flows::compile(text, "49", Files::Unchecked) {
        Ok(compiled) => compiled,
        Err(e) => {
            assert!(!e.0.is_empty(), "a refusal names a problem");
            let lines = text.lines().count().max(1);
            assert!(e.0.iter().all(|p| p.line <= lines + 1), "{e}");
            return;
        }
    };
    let settings = Settings::default();
    let flows = &compiled.flows;
    for (i, seconds) in [0i64, 1_796_000_000, 1_774_746_000, 253_402_207_200].into_iter().enumerate() {
        let inputs = Inputs {
            settings: &settings,
            flows: Some(flows),
            now: jiff::Timestamp::from_second(seconds).expect("in range"),
            country_code: "49",
        };
        for (from, to) in [("492111234567", "49306000000"), ("anonymous", "4930"), ("", "")] {
            let _ = decide::new_call(&inputs, Direction::In, from, to).explain();
        }
        for menu in &flows.menus {
            for step in [1, MAX_PROMPTS, MAX_PROMPTS + i as u32] {
                let offered = MenuState::Offered {
                    menu: menu.name.clone(),
                    step,
                    rule: "r".into(),
                };
                for digits in ["", "1", "9", "#", "12345"] {
                    let d = decide::dtmf(&inputs, &offered, digits, false);
                    if step >= MAX_PROMPTS {
                        assert_ne!(d.action, Action::Menu, "no menu past the cap");
                    }
                    let replayed = decide::dtmf(&inputs, &offered, digits, true);
                    assert_ne!(replayed.action, Action::Menu, "a replay gets no menu");
                }
                let forged = MenuState::NotOffered { menu: menu.name.clone() };
                assert_ne!(decide::dtmf(&inputs, &forged, "1", false).action, Action::Menu);
            }
        }
    }
});
