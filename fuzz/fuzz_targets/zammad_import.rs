//! `settings::zammad::import` on arbitrary text (JSON or the Rails console
//! forms). Never panics; what it accepts exports back to Zammad's shape, and
//! that export imports again to the same settings (block list, routing table,
//! default caller ID and the Zammad keys kept for export) and exports to the
//! same text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipgate_sidecar::settings::zammad;

/// The country codes the import is tried with: each changes how national
/// numbers normalise.
const COUNTRY_CODES: [&str; 3] = ["49", "1", "358"];

fuzz_target!(|text: &str| {
    for cc in COUNTRY_CODES {
        let Ok(imported) = zammad::import(text, cc) else {
            continue;
        };
        let exported = zammad::export(&imported.content);
        let again = zammad::import(&exported, cc)
            .unwrap_or_else(|e| panic!("the export does not import ({e}):\n{exported}"));
        assert_eq!(again.content, imported.content, "cc {cc}");
        assert_eq!(zammad::export(&again.content), exported, "cc {cc}");
    }
});
