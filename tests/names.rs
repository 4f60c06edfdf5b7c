//! Display names that read like another (issue 21): the names reserved for the host, the agent
//! and system notices are refused in every form that reads the same — other case, Cyrillic and
//! Greek look-alikes, fullwidth and mathematical letters, a counter `(n)`, invisible fillers — and
//! a look-alike of a name present joins with a counter, like an exact duplicate.

use proptest::prelude::*;
use roundtable::engine::systems::authenticate::unique_name;
use roundtable::engine::systems::util::{name_forms, valid_display_name, RESERVED_NAMES};
use roundtable::engine::EngineConfig;
use roundtable::testkit::{Harness, HOST};
use serde_json::json;
use std::collections::BTreeSet;

/// Characters that read as `c` in another script (Cyrillic, Greek) or as a digit.
fn homoglyphs(c: char) -> &'static [char] {
    match c {
        'h' => &['\u{4BB}'],
        'H' => &['\u{41D}', '\u{397}'],
        'o' => &['\u{43E}', '\u{3BF}'],
        'O' => &['\u{41E}', '\u{39F}', '0'],
        's' => &['\u{455}'],
        'S' => &['\u{405}'],
        'T' => &['\u{422}', '\u{3A4}'],
        'a' => &['\u{430}'],
        'A' => &['\u{410}', '\u{391}'],
        'e' => &['\u{435}'],
        'E' => &['\u{415}', '\u{395}'],
        'N' => &['\u{39D}'],
        'y' => &['\u{443}'],
        'Y' => &['\u{4AE}', '\u{3A5}'],
        'M' => &['\u{41C}', '\u{39C}'],
        'B' => &['\u{412}', '\u{392}'],
        'K' => &['\u{41A}', '\u{39A}'],
        'P' => &['\u{420}', '\u{3A1}'],
        'X' => &['\u{425}', '\u{3A7}'],
        'c' => &['\u{441}'],
        'p' => &['\u{440}'],
        'x' => &['\u{445}'],
        _ => &[],
    }
}

/// Mathematical alphabets without holes: bold, sans-serif, sans-serif bold, monospace.
const MATH_CAPITAL_A: [u32; 4] = [0x1D400, 0x1D5A0, 0x1D5D4, 0x1D670];

/// `c` (an ASCII letter) written the `how`-th way: as is, other case, fullwidth, one of the math
/// alphabets, or a look-alike from another script.
fn variant(c: char, how: usize) -> char {
    let upper = c.to_ascii_uppercase();
    let lower = c.to_ascii_lowercase();
    let choices: Vec<char> = [c, upper, lower]
        .into_iter()
        .chain([upper, lower].map(|l| char::from_u32(l as u32 + 0xFEE0).unwrap()))
        .chain(MATH_CAPITAL_A.iter().flat_map(|&base| {
            [upper, lower].map(|l| {
                let offset = if l.is_ascii_uppercase() { l as u32 - 'A' as u32 } else { 26 + l as u32 - 'a' as u32 };
                char::from_u32(base + offset).unwrap()
            })
        }))
        .chain(homoglyphs(upper).iter().copied())
        .chain(homoglyphs(lower).iter().copied())
        .collect();
    choices[how % choices.len()]
}

/// A counter as it may be written after a name: ` (2)`, `(13)`, fullwidth `（３）`, math digits.
fn counter(n: u32, how: usize) -> String {
    let digits = n.to_string();
    let shift = |base: u32| -> String {
        digits.chars().map(|d| char::from_u32(base + d as u32 - '0' as u32).unwrap()).collect()
    };
    match how % 4 {
        0 => format!(" ({digits})"),
        1 => format!("({digits})"),
        2 => format!(" （{}）", shift(0xFF10)),
        _ => format!(" ({})", shift(0x1D7CE)),
    }
}

/// Invisible fillers and formatting characters.
const FILLERS: [char; 12] = [
    '\u{3164}',
    '\u{115F}',
    '\u{1160}',
    '\u{FFA0}',
    '\u{2800}',
    '\u{34F}',
    '\u{FE0F}',
    '\u{17B4}',
    '\u{180B}',
    '\u{200B}',
    '\u{2060}',
    '\u{E0041}',
];

fn spelled(word: &str, ways: &[usize]) -> String {
    word.chars().zip(ways.iter().cycle()).map(|(c, &how)| variant(c, how)).collect()
}

proptest! {
    #[test]
    fn every_look_alike_of_a_reserved_name_is_refused(
        word in 0..RESERVED_NAMES.len(),
        ways in prop::collection::vec(any::<usize>(), 1..8),
        count in prop::option::of((1u32..200, any::<usize>())),
        filler in prop::option::of((any::<prop::sample::Index>(), any::<prop::sample::Index>())),
        padded in any::<bool>(),
    ) {
        let mut name = spelled(RESERVED_NAMES[word], &ways);
        if let Some((n, how)) = count {
            name.push_str(&counter(n, how));
        }
        if let Some((at, which)) = filler {
            let chars: Vec<char> = name.chars().collect();
            let at = at.index(chars.len() + 1);
            name = chars[..at].iter().chain([FILLERS[which.index(FILLERS.len())]].iter()).chain(&chars[at..]).collect();
        }
        if padded {
            name = format!(" \u{3000}{name} ");
        }
        let refused = valid_display_name(&name);
        prop_assert!(refused.is_err(), "{:?} was accepted", name);
        let why = refused.unwrap_err();
        match filler {
            Some(_) => prop_assert!(why.contains("U+"), "{:?}: {}", name, why),
            None => prop_assert!(why.contains("reserved"), "{:?}: {}", name, why),
        }
    }

    #[test]
    fn ordinary_names_stay_accepted(
        name in prop_oneof![
            "[BCDFGJKLMNPQRTUVWXYZ][a-zàáâäçèéêëìíîïñòóôöùúûüÿ]{1,12}",
            "[\u{4E00}-\u{9FA5}]{1,6}",
            "(Host|Agent|System)[a-z]{1,6}",
            "(Host|Agent|System) [A-Z][a-z]{1,8}",
            "[BCDFGJKLMNPQRTUVWXYZ][a-z]{1,8} \\([1-9][0-9]{0,2}\\)",
        ],
    ) {
        prop_assert_eq!(valid_display_name(&name), Ok(name.clone()));
    }

    #[test]
    fn a_look_alike_of_a_present_name_gets_a_counter(
        name in "[A-Z][a-z]{1,10}",
        ways in prop::collection::vec(any::<usize>(), 1..8),
    ) {
        let present: BTreeSet<String> = name_forms(&name).into_iter().collect();
        let newcomer = spelled(&name, &ways);
        prop_assert_eq!(unique_name(&newcomer, |f| present.contains(f)), format!("{newcomer} (2)"));
    }
}

#[test]
fn the_names_issue_21_lists_are_refused_with_a_reason() {
    for name in [
        "H\u{43E}st",
        "\u{397}ost",
        "Ｈｏｓｔ",
        "𝐇𝐨𝐬𝐭",
        "\u{410}gent",
        "System",
        "system",
        "Host (2)",
        "Agent (3)",
        "Host(2)",
    ] {
        let why = valid_display_name(name).expect_err(name);
        assert!(why.contains("reserved for the host, the agent and system notices"), "{name:?}: {why}");
    }
    for (name, code) in [
        ("Host\u{3164}", "U+3164"),
        ("Host\u{2800}", "U+2800"),
        ("\u{115F}Ann", "U+115F"),
        ("An\u{1160}n", "U+1160"),
        ("Ann\u{FFA0}", "U+FFA0"),
    ] {
        let why = valid_display_name(name).expect_err(name);
        assert_eq!(why, format!("display_name must not contain invisible filler characters (found {code})"));
    }
    for name in ["Ann", "Hostess", "Agent Smith", "Zoë", "李雷", "Ann (2)", "Émilie", "Søren", "Ωmega"] {
        assert_eq!(valid_display_name(name).as_deref(), Ok(name), "{name:?} is a fine name");
    }
}

fn setup() -> (Harness, String, String) {
    let mut h = Harness::new(EngineConfig::default());
    let (w, s) = h.workspace_and_session(".");
    let tok = h.mint(&[&w], json!({}));
    (h, tok, s)
}

#[test]
fn authenticate_refuses_look_alikes_of_the_host_agent_and_system() {
    let (mut h, tok, _) = setup();
    for (i, name) in
        ["H\u{43E}st", "Ｈｏｓｔ", "𝐇𝐨𝐬𝐭", "Host\u{3164}", "\u{410}gent", "System", "Host (2)"].iter().enumerate()
    {
        let c = h.open(&format!("10.3.0.{i}:1"));
        let err = h.call(c, "authenticate", json!({"token": tok, "display_name": name})).unwrap_err();
        assert_eq!(err["code"], "invalid_params", "{name:?}: {err}");
    }
}

#[test]
fn a_look_alike_of_a_present_name_joins_with_a_counter_like_a_duplicate() {
    let (mut h, tok, s) = setup();
    let (ann, _) = h.join(&tok, "Ann", &s);
    let mut given = Vec::new();
    for (i, name) in ["\u{410}nn", "ANN", "Ａｎｎ", "Ann"].iter().enumerate() {
        let c = h.open(&format!("10.4.0.{i}:1"));
        let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": name})).unwrap();
        given.push(auth["display_name"].as_str().unwrap().to_string());
    }
    assert_eq!(given, ["\u{410}nn (2)", "ANN (3)", "Ａｎｎ (4)", "Ann (5)"]);
    // Once Ann has gone, her name is free again.
    h.close(ann);
    h.run(40_000);
    let c = h.open("10.4.1.1:1");
    let auth = h.call(c, "authenticate", json!({"token": tok, "display_name": "\u{410}nn"})).unwrap();
    assert_eq!(auth["display_name"], "\u{410}nn");
}

#[test]
fn the_host_cannot_take_a_look_alike_of_agent_or_system() {
    let (mut h, _, _) = setup();
    for name in ["\u{410}gent", "SYSTEM", "Ｓｙｓｔｅｍ", "Agent (2)", "Maya\u{3164}"] {
        let err = h.call(HOST, "update_settings", json!({"host_name": name})).unwrap_err();
        assert_eq!(err["code"], "invalid_params", "{name:?}: {err}");
        assert!(err["message"].as_str().unwrap().contains("host_name"), "{err}");
    }
    assert_eq!(h.host("update_settings", json!({"host_name": "Maya"}))["host_name"], "Maya");
    assert_eq!(h.host("update_settings", json!({"host_name": "Host"}))["host_name"], "Host");
}
