//! `settings::zammad::import` on arbitrary text. Never panics; what it
//! accepts exports back to Zammad's shape, and that export imports again to
//! the same block list, routing table and default caller ID (and exports to
//! the same text).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipgate_sidecar::{decide::Settings, settings::zammad};

/// The country codes the import is tried with: each changes how national
/// numbers normalise.
const COUNTRY_CODES: [&str; 3] = ["49", "1", "358"];

fuzz_target!(|json: &str| {
    for cc in COUNTRY_CODES {
        let Ok(imported) = zammad::import(json, cc) else {
            continue;
        };
        let settings = Settings {
            block_list: imported.block_list.clone(),
            routing_table: imported.routing_table.clone(),
            default_caller_id: imported.default_caller_id.clone(),
            version: 1,
        };
        let exported = zammad::export(&settings);
        let again = zammad::import(&exported, cc)
            .unwrap_or_else(|e| panic!("the export does not import ({e}):\n{exported}"));
        assert_eq!(again.block_list, imported.block_list, "cc {cc}");
        assert_eq!(again.routing_table, imported.routing_table, "cc {cc}");
        assert_eq!(
            again.default_caller_id, imported.default_caller_id,
            "cc {cc}"
        );
        let settings_again = Settings {
            block_list: again.block_list,
            routing_table: again.routing_table,
            default_caller_id: again.default_caller_id,
            version: 1,
        };
        assert_eq!(zammad::export(&settings_again), exported, "cc {cc}");
    }
});
