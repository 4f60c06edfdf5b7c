//! Corpora for secret masking (issue 24).
//!
//! 1. Generated secrets: for every format the built-in patterns support, several secrets generated
//!    from a fixed seed (never real ones) in realistic contexts (plain text, JSON, YAML, .env,
//!    shell, URL, code). Each must be fully masked (no 8-character window of the secret survives)
//!    by `Masker::mask` and when streamed in random pieces down to 1 byte.
//! 2. False positives: this project's own sources, docs and `Cargo.lock`, plus generated UUIDs,
//!    git SHAs, base64 image data and prose. The test prints how many bytes and lines are masked
//!    and every remaining hit (so they can be reviewed), and bounds the rate.

// The false-positive corpus reads this repository's files (crates/engine/clippy.toml: "tests may
// allow it"); the engine itself still reads nothing.
#![allow(clippy::disallowed_methods)]

use roundtable_engine::mask::Masker;
use std::path::{Path, PathBuf};

/// A small deterministic generator (xorshift64*), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// `n` characters from `alphabet`.
    fn s(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| char::from(a[self.below(a.len())])).collect()
    }
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const URLSAFE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Passwords: letters, digits and the symbols people use in them.
const PASSWORD: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#%^*-_+";

fn base64(bytes: &[u8]) -> String {
    let table = B64.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A password with at least one digit (what the key-value rule requires of an unquoted value).
fn password(r: &mut Rng) -> String {
    let n = 10 + r.below(12);
    format!("{}{}", r.s(PASSWORD, n), r.below(10))
}

/// One generated case: the text to mask and the secret in it that must not survive.
struct Case {
    text: String,
    secret: String,
}

/// Puts a bare token into the usual contexts.
fn contexts(token: &str, r: &mut Rng) -> Vec<Case> {
    let templates = [
        "Here is the key: {S} — keep it safe.",
        "{\"key\": \"{S}\", \"id\": 7}",
        "config:\n  key: {S}\n  region: eu\n",
        "SERVICE_KEY={S}\n",
        "export SERVICE_KEY=\"{S}\"\n",
        "https://api.example.com/v1/items?key={S}&page=2",
        "    let client = Client::new(\"{S}\");",
    ];
    let pick = r.below(templates.len());
    [0, pick, (pick + 3) % templates.len()]
        .iter()
        .map(|&i| Case { text: templates[i].replace("{S}", token), secret: token.to_string() })
        .collect()
}

/// Puts a secret into a template that carries it (`{S}`).
fn framed(templates: &[&str], secret: &str) -> Vec<Case> {
    templates.iter().map(|t| Case { text: t.replace("{S}", secret), secret: secret.to_string() }).collect()
}

/// Every supported format: a name and a generator of cases.
type Generator = fn(&mut Rng) -> Vec<Case>;

fn formats() -> Vec<(&'static str, Generator)> {
    vec![
        ("private_key_pem", |r| {
            let body: Vec<String> = (0..4).map(|_| r.s(B64, 64)).collect();
            let block = format!("-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----", body.join("\n"));
            let json = block.replace('\n', "\\n");
            let mut cases = vec![
                Case { text: format!("key:\n{block}\ndone"), secret: body.join("") },
                Case { text: format!("{{\"private_key\": \"{json}\\n\", \"x\": 1}}"), secret: body.join("") },
            ];
            // Unterminated: the key lines are masked all the same.
            cases.push(Case {
                text: format!("-----BEGIN PRIVATE KEY-----\n{}\nand then prose", body[..2].join("\n")),
                secret: body[..2].join(""),
            });
            cases
                .into_iter()
                .flat_map(|c| body.iter().map(move |b| Case { text: c.text.clone(), secret: b.clone() }))
                .collect()
        }),
        ("age", |r| contexts(&format!("AGE-SECRET-KEY-1{}", r.s("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)), r)),
        ("password_pair", |r| {
            let p = password(r);
            framed(
                &[
                    "DB_PASSWORD={S}\n",
                    "password: {S}\n",
                    "{\"password\": \"{S}\"}",
                    "password: \"{S}\"\n",
                    "[client]\nuser = app\npassword = {S}\nhost = db\n",
                    "[database]\npassword = \"{S}\"\n",
                    "export MYSQL_PWD='{S}'\n",
                    "'password' => '{S}',\n",
                    "define('DB_PASSWORD', '{S}');\n",
                    "SMTP_PASS={S}\n",
                    "REDIS_PASSWD: {S}\n",
                ],
                &p,
            )
        }),
        ("secret_key_names", |r| {
            let s = format!("{}{}", r.s(ALNUM, 30), r.below(10));
            framed(
                &[
                    "SECRET_KEY = '{S}'\n",
                    "APP_KEY=base64:{S}\n",
                    "ENCRYPTION_KEY={S}\n",
                    "API_KEY: {S}\n",
                    "PRIVATE_KEY=\"{S}\"\n",
                    "client_secret: {S}\n",
                    "access_key = {S}\n",
                    "{\"api_key\": \"{S}\"}",
                    "GITHUB_TOKEN={S}\n",
                    "export AUTH_TOKEN={S}\n",
                ],
                &s,
            )
        }),
        ("authorization", |r| {
            let t = r.s(URLSAFE, 40);
            let basic = base64(format!("deploy:{}", password(r)).as_bytes());
            let mut c = framed(
                &[
                    "curl -H 'Authorization: Bearer {S}' https://api.example.com",
                    "Authorization: token {S}\r\n",
                    "{\"Authorization\": \"Bearer {S}\"}",
                    "Authorization: SSWS {S}\n",
                    "use Bearer {S} here",
                ],
                &t,
            );
            c.extend(framed(&["Authorization: Basic {S}\r\n"], &basic));
            c
        }),
        ("jwt", |r| {
            let t = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", r.s(URLSAFE, 40), r.s(URLSAFE, 43));
            contexts(&t, r)
        }),
        ("url_credentials", |r| {
            let p = r.s(ALNUM, 16);
            framed(&["git clone https://deploy:{S}@git.example.com/x.git", "redis://:{S}@cache:6379/0"], &p)
        }),
        ("curl_user", |r| {
            let p = r.s(ALNUM, 16);
            framed(
                &["curl -u deploy:{S} https://api.example.com", "curl -s --user=ci:{S} \\\n  https://x.example.com"],
                &p,
            )
        }),
        ("openai", |r| contexts(&format!("sk-proj-{}", r.s(URLSAFE, 48)), r)),
        ("anthropic", |r| contexts(&format!("sk-ant-api03-{}AA", r.s(URLSAFE, 93)), r)),
        ("groq", |r| contexts(&format!("gsk_{}", r.s(ALNUM, 52)), r)),
        ("replicate", |r| contexts(&format!("r8_{}", r.s(ALNUM, 37)), r)),
        ("huggingface", |r| contexts(&format!("hf_{}", r.s(ALNUM, 34)), r)),
        ("perplexity", |r| contexts(&format!("pplx-{}", r.s(ALNUM, 48)), r)),
        ("xai", |r| contexts(&format!("xai-{}", r.s(ALNUM, 80)), r)),
        ("github", |r| {
            let mut c = contexts(&format!("ghp_{}", r.s(ALNUM, 36)), r);
            c.extend(contexts(
                &format!("github_pat_{}", r.s("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", 82)),
                r,
            ));
            c
        }),
        ("gitlab", |r| {
            let mut c = contexts(&format!("glpat-{}", r.s(URLSAFE, 20)), r);
            c.extend(contexts(&format!("glrt-{}", r.s(URLSAFE, 20)), r));
            c.extend(contexts(&format!("glpat-{}.01{}", r.s(URLSAFE, 27), r.s(LOWER, 7)), r));
            c.extend(framed(&["Cookie: _gitlab_session={S}; path=/"], &r.s(LOWER, 32)));
            c
        }),
        ("atlassian", |r| contexts(&format!("ATATT3{}", r.s(URLSAFE, 186)), r)),
        ("buildkite", |r| contexts(&format!("bkua_{}", r.s(HEX, 40)), r)),
        ("sourcegraph", |r| {
            let mut c = contexts(&format!("sgp_{}_{}", r.s(HEX, 16), r.s(HEX, 40)), r);
            c.extend(contexts(&format!("sgs_{}", r.s(HEX, 40)), r));
            c
        }),
        ("sonar", |r| {
            let mut c = contexts(&format!("sqp_{}", r.s(HEX, 40)), r);
            c.extend(framed(&["mvn sonar:sonar -Dsonar.login={S}", "SONAR_TOKEN: {S}\n"], &r.s(LOWER, 40)));
            c
        }),
        ("npm", |r| {
            let mut c = contexts(&format!("npm_{}", r.s(ALNUM, 36)), r);
            c.extend(framed(&["//registry.npmjs.org/:_auth={S}\n"], &base64(format!("ci:{}", password(r)).as_bytes())));
            c.extend(framed(&["//npm.example.com/:_authToken={S}\n"], &format!("{}-{}", r.s(HEX, 8), r.s(HEX, 24))));
            c
        }),
        ("docker_config_auth", |r| {
            framed(
                &["{\"auths\": {\"ghcr.io\": {\"auth\": \"{S}\"}}}"],
                &base64(format!("ci:{}", password(r)).as_bytes()),
            )
        }),
        ("nuget", |r| framed(&["<add key=\"ClearTextPassword\" value=\"{S}\" />"], &password(r))),
        ("pypi", |r| contexts(&format!("pypi-AgEIcHlwaS5vcmc{}", r.s(URLSAFE, 60)), r)),
        ("docker_hub", |r| contexts(&format!("dckr_pat_{}", r.s(URLSAFE, 27)), r)),
        ("artifactory", |r| contexts(&format!("AKCp{}", r.s(ALNUM, 69)), r)),
        ("octopus", |r| contexts(&format!("API-{}", r.s(UPPER, 26)), r)),
        ("clojars", |r| contexts(&format!("CLOJARS_{}", r.s(LOWER, 60)), r)),
        ("aws", |r| {
            let mut c = contexts(&format!("AKIA{}", r.s("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)), r);
            c.extend(framed(&["aws_secret_access_key = {S}\n", "AWS_SESSION_TOKEN: \"{S}\""], &r.s(B64, 40)));
            c
        }),
        ("aws_bedrock", |r| {
            let key = base64(&(0..100).map(|_| r.next() as u8).collect::<Vec<_>>());
            contexts(&format!("ABSK{}", key.trim_end_matches('=')), r)
        }),
        ("azure", |r| {
            let mut c = framed(
                &["DefaultEndpointsProtocol=https;AccountName=a;AccountKey={S}==;EndpointSuffix=core.windows.net"],
                &r.s(B64, 86),
            );
            c.extend(contexts(&format!("{}8Q~{}", r.s(ALNUM, 3), r.s(ALNUM, 34)), r));
            c
        }),
        ("google", |r| {
            let mut c = contexts(&format!("AIza{}", r.s(URLSAFE, 35)), r);
            c.extend(contexts(&format!("GOCSPX-{}", r.s(URLSAFE, 28)), r));
            c.extend(contexts(&format!("ya29.{}", r.s(URLSAFE, 60)), r));
            c
        }),
        ("digitalocean", |r| contexts(&format!("dop_v1_{}", r.s(HEX, 64)), r)),
        ("alibaba", |r| contexts(&format!("LTAI{}", r.s(ALNUM, 20)), r)),
        ("heroku", |r| contexts(&format!("HRKU-AA{}", r.s(URLSAFE, 58)), r)),
        ("databricks", |r| contexts(&format!("dapi{}", r.s(HEX, 32)), r)),
        ("doppler", |r| contexts(&format!("dp.pt.{}", r.s(ALNUM, 43)), r)),
        ("pulumi", |r| contexts(&format!("pul-{}", r.s(HEX, 40)), r)),
        ("vault", |r| contexts(&format!("hvs.{}", r.s(URLSAFE, 95)), r)),
        ("terraform", |r| contexts(&format!("{}.atlasv1.{}", r.s(ALNUM, 14), r.s(URLSAFE, 67)), r)),
        ("planetscale", |r| {
            let mut c = contexts(&format!("pscale_tkn_{}", r.s(URLSAFE, 43)), r);
            c.extend(framed(
                &["mysql -h aws.connect.psdb.cloud -u app -p{S} db"],
                &format!("pscale_pw_{}", r.s(URLSAFE, 43)),
            ));
            c
        }),
        ("supabase", |r| contexts(&format!("sbp_{}", r.s(HEX, 40)), r)),
        ("grafana", |r| contexts(&format!("glsa_{}_{}", r.s(ALNUM, 32), r.s(HEX, 8)), r)),
        ("new_relic", |r| {
            let mut c = contexts(&format!("NRAK-{}", r.s(UPPER, 27)), r);
            c.extend(contexts(&format!("NRII-{}", r.s(URLSAFE.trim_end_matches("_-"), 32)), r));
            c.extend(contexts(&format!("NRJS-{}", r.s(HEX, 19)), r));
            c
        }),
        ("sentry", |r| contexts(&format!("sntryu_{}", r.s(HEX, 64)), r)),
        ("cloudflare_origin_ca", |r| contexts(&format!("v1.0-{}-{}", r.s(HEX, 24), r.s(HEX, 146)), r)),
        ("flyio", |r| {
            let mut c = contexts(&format!("fo1_{}", r.s(URLSAFE, 43)), r);
            c.extend(framed(
                &["Authorization: FlyV1 {S}\n", "FLY_API_TOKEN=\"FlyV1 {S}\""],
                &format!("fm2_{}", r.s(B64, 140)),
            ));
            c
        }),
        ("datadog", |r| {
            framed(&["DD_APP_KEY={S}\n", "datadog:\n  app_key: {S}\n", "DATADOG_API_KEY=\"{S}\""], &r.s(HEX, 40))
        }),
        ("algolia", |r| framed(&["ALGOLIA_ADMIN_KEY={S}\n", "algolia.adminKey: \"{S}\""], &r.s(HEX, 32))),
        ("dynatrace", |r| contexts(&format!("dt0c01.{}.{}", r.s(UPPER, 24), r.s(UPPER, 64)), r)),
        ("openshift", |r| contexts(&format!("sha256~{}", r.s(URLSAFE, 43)), r)),
        ("stripe", |r| {
            let mut c = contexts(&format!("sk_live_{}", r.s(ALNUM, 24)), r);
            c.extend(contexts(&format!("whsec_{}", r.s(ALNUM, 32)), r));
            c
        }),
        ("square", |r| {
            let mut c = contexts(&format!("sq0atp-{}", r.s(URLSAFE, 22)), r);
            c.extend(contexts(&format!("sq0csp-{}", r.s(URLSAFE, 43)), r));
            c.extend(contexts(&format!("EAAA{}", r.s(URLSAFE, 60)), r));
            c
        }),
        ("shopify", |r| contexts(&format!("shpat_{}", r.s(HEX, 32)), r)),
        ("facebook", |r| {
            let mut c = contexts(&format!("EAAM{}", r.s(ALNUM, 120)), r);
            let secret = r.s(URLSAFE, 32);
            c.extend(framed(&[&format!("GET /me?fields=id&app={}|{{S}}&x=1", r.s("0123456789", 15))], &secret));
            c
        }),
        ("flutterwave", |r| contexts(&format!("FLWSECK_TEST-{}-X", r.s("abcdefgh0123456789", 32)), r)),
        ("shippo", |r| contexts(&format!("shippo_live_{}", r.s(HEX, 40)), r)),
        ("easypost", |r| contexts(&format!("EZAK{}", r.s(ALNUM, 54)), r)),
        ("slack", |r| {
            let mut c =
                contexts(&format!("xoxb-{}-{}-{}", r.s("0123456789", 11), r.s("0123456789", 12), r.s(ALNUM, 24)), r);
            c.extend(framed(
                &["https://hooks.slack.com/services/{S}"],
                &format!("T{}/B{}/{}", r.s(UPPER, 8), r.s(UPPER, 8), r.s(ALNUM, 24)),
            ));
            c
        }),
        ("discord", |r| {
            let mut c = framed(&["https://discord.com/api/webhooks/123456789012345678/{S}"], &r.s(URLSAFE, 68));
            c.extend(contexts(&format!("MT{}.{}.{}", r.s(URLSAFE, 24), r.s(URLSAFE, 6), r.s(URLSAFE, 38)), r));
            c
        }),
        ("telegram", |r| {
            let t = format!("AA{}", r.s(URLSAFE, 33));
            let id = r.s("0123456789", 10);
            framed(
                &[
                    &format!("https://api.telegram.org/bot{id}:{{S}}/sendMessage"),
                    &format!("TELEGRAM_BOT_TOKEN={id}:{{S}}\n"),
                ],
                &t,
            )
        }),
        ("twilio", |r| contexts(&format!("SK{}", r.s(HEX, 32)), r)),
        ("sendgrid", |r| contexts(&format!("SG.{}.{}", r.s(URLSAFE, 22), r.s(URLSAFE, 43)), r)),
        ("mailgun", |r| {
            let mut c = contexts(&format!("key-{}", r.s(HEX, 32)), r);
            c.extend(contexts(&format!("{}-{}-{}", r.s(HEX, 32), r.s(HEX, 8), r.s(HEX, 8)), r));
            c
        }),
        ("mailchimp", |r| contexts(&format!("{}-us{}", r.s(HEX, 32), 1 + r.below(20)), r)),
        ("brevo", |r| contexts(&format!("xkeysib-{}-{}", r.s(HEX, 64), r.s(ALNUM, 16)), r)),
        ("onepassword", |r| {
            let mut c = contexts(&format!("ops_eyJ{}", r.s(B64, 300)), r);
            let k = format!(
                "A3-{}-{}-{}-{}-{}",
                r.s(UPPER, 6),
                r.s(UPPER, 11),
                r.s(UPPER, 5),
                r.s(UPPER, 5),
                r.s(UPPER, 5)
            );
            c.extend(contexts(&k, r));
            c
        }),
        ("prefect", |r| contexts(&format!("pnu_{}", r.s(ALNUM, 36)), r)),
        ("readme", |r| contexts(&format!("rdme_{}", r.s(LOWER, 70)), r)),
        ("typeform", |r| contexts(&format!("tfp_{}", r.s(URLSAFE, 59)), r)),
        ("infracost", |r| contexts(&format!("ico-{}", r.s(ALNUM, 32)), r)),
        ("frameio", |r| contexts(&format!("fio-u-{}", r.s(URLSAFE, 64)), r)),
        ("scalingo", |r| contexts(&format!("tk-us-{}", r.s(URLSAFE, 48)), r)),
        ("duffel", |r| contexts(&format!("duffel_live_{}", r.s(URLSAFE, 43)), r)),
        ("maxmind", |r| contexts(&format!("{}_{}_mmk", r.s(ALNUM, 6), r.s(ALNUM, 29)), r)),
        ("adobe", |r| contexts(&format!("p8e-{}", r.s(ALNUM, 32)), r)),
        ("harness", |r| contexts(&format!("pat.{}.{}.{}", r.s(URLSAFE, 22), r.s(ALNUM, 24), r.s(ALNUM, 20)), r)),
        ("grafana_api_key", |r| contexts(&format!("eyJrIjoi{}", r.s(ALNUM, 80)), r)),
        ("rubygems", |r| contexts(&format!("rubygems_{}", r.s(HEX, 48)), r)),
        ("settlemint", |r| contexts(&format!("sm_aat_{}", r.s(ALNUM, 16)), r)),
        ("clickhouse", |r| contexts(&format!("4b1d{}", r.s(ALNUM, 38)), r)),
        ("intra42", |r| contexts(&format!("s-s4t2af-{}", r.s(HEX, 64)), r)),
        ("teams_webhook", |r| {
            let path = format!("{}@{}/IncomingWebhook/{}/{}", r.s(HEX, 36), r.s(HEX, 36), r.s(HEX, 32), r.s(HEX, 36));
            framed(&["https://acme.webhook.office.com/webhookb2/{S}"], &path)
        }),
        ("sidekiq", |r| framed(&["BUNDLE_GEMS__CONTRIBSYS__COM={S}\n"], &format!("{}:{}", r.s(HEX, 8), r.s(HEX, 8)))),
        ("vendor_key_names", |r| {
            let k = format!("{}{}", r.s(ALNUM, 25), r.below(10));
            framed(
                &[
                    "TWITTER_CONSUMER_KEY={S}\n",
                    "HUBSPOT_API_KEY: {S}\n",
                    "OKTA_API_TOKEN=\"{S}\"\n",
                    "ZENDESK_SECRET={S}\n",
                ],
                &k,
            )
        }),
        ("linear", |r| contexts(&format!("lin_api_{}", r.s(ALNUM, 40)), r)),
        ("postman", |r| contexts(&format!("PMAK-{}-{}", r.s(HEX, 24), r.s(HEX, 34)), r)),
        ("notion", |r| contexts(&format!("ntn_{}", r.s(ALNUM, 46)), r)),
        ("figma", |r| contexts(&format!("figd_{}", r.s(URLSAFE, 40)), r)),
    ]
}

/// The first 8-character window of `secret` found in `out`, if any.
fn surviving_window<'a>(out: &str, secret: &'a str) -> Option<&'a str> {
    let bytes = secret.as_bytes();
    (0..=bytes.len().saturating_sub(8)).map(|i| &secret[i..(i + 8).min(secret.len())]).find(|w| out.contains(w))
}

fn streamed(masker: &Masker, text: &str, r: &mut Rng) -> String {
    let mut stream = masker.stream();
    let mut out = String::new();
    let mut at = 0;
    // Piece sizes from 1 byte up, varying within one text.
    let max = 1 + r.below(24);
    while at < text.len() {
        let mut end = (at + 1 + r.below(max)).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push_str(&stream.feed(&text[at..end]));
        at = end;
    }
    out.push_str(&stream.finish());
    out
}

#[test]
fn every_generated_secret_is_fully_masked_whole_and_streamed() {
    let masker = Masker::default();
    let mut r = Rng(0x5EC2_E7C0_2024);
    let (mut cases, mut leaks) = (0, Vec::new());
    let formats = formats();
    for (name, generate) in &formats {
        for _ in 0..4 {
            for case in generate(&mut r) {
                cases += 1;
                let whole = masker.mask(&case.text);
                if let Some(w) = surviving_window(&whole, &case.secret) {
                    leaks.push(format!("{name} (mask): {w:?} survives in {whole:?}"));
                }
                for _ in 0..3 {
                    let out = streamed(&masker, &case.text, &mut r);
                    if out != whole {
                        leaks.push(format!("{name} (stream): {out:?} != {whole:?}"));
                    } else if let Some(w) = surviving_window(&out, &case.secret) {
                        leaks.push(format!("{name} (stream): {w:?} survives"));
                    }
                }
            }
        }
    }
    println!("generated-secret corpus: {} formats, {cases} cases, {} leaks", formats.len(), leaks.len());
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
}

/// Files whose purpose is to hold sample secrets (the masking tests and their docs): excluded
/// from the false-positive corpus, since every hit in them is deliberate.
const SAMPLE_FILES: &[&str] = &[
    // The pattern samples and near misses of every format.
    "crates/engine/src/mask.rs",
    "crates/engine/src/mask_patterns.rs",
    // This corpus.
    "crates/engine/tests/mask_corpus.rs",
    // The bench plants secrets in its generated output.
    "src/app/bench_mask.rs",
    // The tool-input masking tests (`sk-ant-api03-…` samples inside JSON).
    "crates/engine/src/mask_json.rs",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target" && !n.to_string_lossy().starts_with('.')) {
                walk(&path, ext, out);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// The false-positive corpus: `(name, text)`.
fn ordinary_texts(r: &mut Rng) -> Vec<(String, String)> {
    let root = repo_root();
    let mut files = Vec::new();
    walk(&root.join("src"), "rs", &mut files);
    walk(&root.join("crates"), "rs", &mut files);
    walk(&root.join("docs"), "md", &mut files);
    files.push(root.join("README.md"));
    files.push(root.join("Cargo.lock"));
    let mut texts: Vec<(String, String)> = files
        .iter()
        .filter_map(|p| {
            let name = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let keep = !SAMPLE_FILES.contains(&name.as_str())
                && (name.matches('/').count() <= 1 || !name.starts_with("docs/"));
            keep.then(|| Some((name, std::fs::read_to_string(p).ok()?))).flatten()
        })
        .collect();
    let uuids: Vec<String> = (0..2000)
        .map(|_| format!("{}-{}-4{}-a{}-{}", r.s(HEX, 8), r.s(HEX, 4), r.s(HEX, 3), r.s(HEX, 3), r.s(HEX, 12)))
        .collect();
    texts.push(("generated UUIDs".into(), uuids.join("\n")));
    let shas: Vec<String> = (0..2000).map(|_| format!("commit {} Merge branch 'x'", r.s(HEX, 40))).collect();
    texts.push(("generated git SHAs".into(), shas.join("\n")));
    let mut pngs = Vec::new();
    walk(&root.join("docs/screenshots"), "png", &mut pngs);
    if let Some(png) = pngs.first() {
        let data = base64(&std::fs::read(png).unwrap());
        let lines: Vec<&str> = data.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
        texts.push((format!("{} as base64 (76-column lines)", png.display()), lines.join("\n")));
        texts
            .push((format!("{} as a data: URL", png.display()), format!("<img src=\"data:image/png;base64,{data}\">")));
    }
    let prose = "The token bucket refills every second, so a burst of requests drains it and then waits. \
        Passwords should be long; the secret to a good one is length, not symbols. \
        Authorization: Basic followed by base64 of user:password, or Bearer followed by a token. \
        I looked at the failing test and the access key rotation runs nightly. \
        The API key is read from the environment at start-up and never logged.\n";
    texts.push(("prose".into(), prose.repeat(200)));
    texts
}

#[test]
fn ordinary_text_is_rarely_masked() {
    let masker = Masker::default();
    let mut r = Rng(0x0F_A15E_2024);
    let (mut bytes, mut lines, mut masked_bytes, mut masked_lines) = (0usize, 0usize, 0usize, 0usize);
    let mut hits = Vec::new();
    for (name, text) in ordinary_texts(&mut r) {
        bytes += text.len();
        lines += text.lines().count();
        let spans = masker.spans(&text);
        let mut hit_lines = std::collections::BTreeSet::new();
        for span in &spans {
            masked_bytes += span.len();
            let first = text[..span.start].matches('\n').count() + 1;
            let last = first + text[span.clone()].matches('\n').count();
            hit_lines.extend(first..=last);
            let shown: String = text[span.clone()].chars().take(100).collect();
            hits.push(format!("{name}:{first}: {shown:?}"));
        }
        masked_lines += hit_lines.len();
    }
    let byte_rate = masked_bytes as f64 / bytes as f64;
    let line_rate = masked_lines as f64 / lines as f64;
    println!(
        "false-positive corpus: {masked_bytes} of {bytes} bytes masked ({:.4} %), {masked_lines} of {lines} lines ({:.4} %), {} hits:",
        byte_rate * 100.0,
        line_rate * 100.0,
        hits.len()
    );
    for hit in &hits {
        println!("  {hit}");
    }
    assert!(bytes > 1_000_000, "the corpus should be the project's sources: {bytes} bytes");
    assert!(byte_rate < BYTE_BOUND, "over-masking: {:.4} % of bytes", byte_rate * 100.0);
    assert!(masked_lines <= LINE_BOUND, "over-masking: {masked_lines} lines");
}

/// Bounds set from the measurement (December 2026: 665 bytes = 0.024 % of 2.77 MB, 16 of 59 612
/// lines, every hit an example credential in docs/PROTOCOL.md or docs/AGENTS.md; see
/// docs/AGENTS.md "Secret masking"), with room for the docs to grow.
const BYTE_BOUND: f64 = 0.001;
const LINE_BOUND: usize = 40;
