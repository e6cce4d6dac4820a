//! The policy reader and compiler on arbitrary bytes, as one YAML file of a revision: whatever
//! the input, `compile_documents` returns (no panic, no hang, bounded memory), and every
//! problem it reports names the file and an object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_compile::snapshot::compile_documents;
use tollgate_model::{Documents, PolicyErrors};

fuzz_target!(|data: &[u8]| {
    // The sources read files as UTF-8 and refuse anything else before the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let docs = Documents::inline(&[("fuzz.yaml", text)]);
    match compile_documents(&docs, None) {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                assert_eq!(w.location.file, "fuzz.yaml", "{w}");
                assert!(!w.location.object.is_empty(), "{w}");
            }
        }
        Err(PolicyErrors(errors)) => {
            assert!(!errors.is_empty(), "a refusal without a reason");
            for e in &errors {
                assert_eq!(e.location.file, "fuzz.yaml", "{e}");
                assert!(!e.location.object.is_empty(), "{e}");
                assert!(!e.message.is_empty(), "{e:?}");
            }
        }
    }
});
