use roundtable::engine::EngineConfig;
use roundtable::testkit::{Harness, HOST};
use serde_json::json;

fn dump(h: &Harness, conn: roundtable::ids::ConnId, label: &str) {
    println!("==== {label} ({conn})");
    for f in h.sinks[&conn].raw.lock().unwrap().drain(..) {
        println!("{f}");
    }
}

#[test]
fn dump_frames() {
    let mut h = Harness::new(EngineConfig::default());
    h.send_raw(HOST, r#"{"id":1,"method":"add_workspace","params":{"name":"api","dir":"."}}"#);
    h.tick();
    h.send_raw(HOST, r#"{"id":2,"method":"create_session","params":{"workspace_id":"w1","title":"Fix login"}}"#);
    h.tick();
    h.send_raw(HOST, r#"{"id":3,"method":"mint_share","params":{"label":"team","workspaces":["w1"]}}"#);
    h.tick();
    h.send_raw(HOST, r#"{"id":4,"method":"list_shares","params":{}}"#);
    h.tick();
    dump(&h, HOST, "host setup");
    let tok = h.frames(HOST).iter().find(|f| f["id"] == 3).unwrap()["result"]["token"].as_str().unwrap().to_string();
    let ann = h.open("10.0.0.1:5000");
    h.send_raw(ann, r#"{"id":1,"method":"list_sessions","params":{}}"#);
    h.send_raw(ann, r#"{"id":2,"method":"ping","params":{"nonce":"n1"}}"#);
    h.send_raw(ann, &format!(r#"{{"id":3,"method":"authenticate","params":{{"token":"{tok}","display_name":"Ann"}}}}"#));
    h.tick();
    h.send_raw(ann, r#"{"id":4,"method":"list_workspaces"}"#);
    h.send_raw(ann, r#"{"id":5,"method":"list_sessions","params":{"workspace_id":"w1"}}"#);
    h.send_raw(ann, r#"{"id":6,"method":"join_session","params":{"session_id":"s1"}}"#);
    h.send_raw(ann, r#"{"id":7,"method":"kick","params":{"participant_id":"host"}}"#);
    h.send_raw(ann, r#"{"id":8,"method":"authenticate","params":{"token":"x","display_name":"A"}}"#);
    h.tick();
    h.send_raw(ann, r#"{"id":9,"method":"read_workspace_file","params":{"session_id":"s1","path":"Cargo.toml"}}"#);
    h.send_raw(ann, r#"{"id":10,"method":"read_workspace_file","params":{"session_id":"s1","path":"../etc/passwd"}}"#);
    h.send_raw(ann, r#"{"id":11,"method":"cancel_turn","params":{"session_id":"s1"}}"#);
    h.send_raw(ann, r#"{nope"#);
    h.send_raw(ann, r#"{"id":12,"method":"explode"}"#);
    h.send_raw(ann, r#"{"id":13,"method":"vote_plan","params":{"vote_id":"v1","approve":"yes"}}"#);
    h.send_raw(ann, r#"[1,2]"#);
    h.send_raw(ann, r#"{"id":14}"#);
    h.send_raw(ann, r#"{"id":15,"method":"ping","params":[1]}"#);
    h.send_raw(ann, &format!(r#"{{"id":16,"method":"ping","params":{{"nonce":"{}"}}}}"#, "x".repeat(70000)));
    h.send_raw(ann, r#"{"id":17,"method":"join_session","params":{"session_id":"s9"}}"#);
    h.send_raw(ann, r#"{"id":18,"method":"vote_plan","params":{"vote_id":"v9","approve":true}}"#);
    h.send_raw(ann, r#"{"id":19,"method":"leave_session","params":{"session_id":"s1"}}"#);
    h.send_raw(ann, r#"{"id":20,"method":"join_session","params":{"session_id":"s1","since_seq":0}}"#);
    h.tick();
    dump(&h, ann, "ann auth/queries/errors");
    dump(&h, HOST, "host sees");
    let bob = h.open("10.0.0.2:5000");
    h.send_raw(bob, &format!(r#"{{"id":1,"method":"authenticate","params":{{"token":"{tok}","display_name":"Bob"}}}}"#));
    h.tick();
    h.send_raw(bob, r#"{"id":2,"method":"join_session","params":{"session_id":"s1","since_seq":0}}"#);
    h.tick();
    dump(&h, bob, "bob join since 0");
    h.send_raw(ann, r#"{"id":21,"method":"send_message","params":{"session_id":"s1","text":"hello agent","client_msg_id":"c-1"}}"#);
    h.tick();
    h.send_raw(bob, r#"{"id":3,"method":"send_message","params":{"session_id":"s1","text":"me too","client_msg_id":"b-1"}}"#);
    h.send_raw(ann, r#"{"id":22,"method":"send_message","params":{"session_id":"s1","text":"hello agent","client_msg_id":"c-1"}}"#);
    h.send_raw(ann, r#"{"id":23,"method":"send_message","params":{"session_id":"s1","text":"other","client_msg_id":"c-1"}}"#);
    h.run(300);
    dump(&h, ann, "ann turn");
    dump(&h, bob, "bob turn");
    // plan vote
    h.send_raw(ann, r#"{"id":24,"method":"send_message","params":{"session_id":"s1","text":"/plan login fix","client_msg_id":"c-2"}}"#);
    h.run(200);
    dump(&h, ann, "ann plan open");
    h.send_raw(ann, r#"{"id":25,"method":"vote_plan","params":{"vote_id":"v1","approve":true}}"#);
    h.tick();
    h.send_raw(bob, r#"{"id":4,"method":"vote_plan","params":{"vote_id":"v1","approve":false,"reason":"needs tests"}}"#);
    h.tick();
    h.send_raw(ann, r#"{"id":26,"method":"vote_plan","params":{"vote_id":"v1","approve":true}}"#);
    h.run(300);
    dump(&h, ann, "ann plan resolve");
    dump(&h, bob, "bob plan");
    // question
    h.send_raw(bob, r#"{"id":5,"method":"send_message","params":{"session_id":"s1","text":"/ask the migration","client_msg_id":"b-2"}}"#);
    h.run(200);
    h.send_raw(ann, r#"{"id":27,"method":"answer_question","params":{"vote_id":"v2","answers":["yes"]}}"#);
    h.send_raw(bob, r#"{"id":6,"method":"answer_question","params":{"vote_id":"v2","answers":["no, wait"]}}"#);
    h.run(300);
    dump(&h, ann, "ann question");
    dump(&h, bob, "bob question");
    // fail + cancel
    h.send_raw(ann, r#"{"id":28,"method":"send_message","params":{"session_id":"s1","text":"/fail","client_msg_id":"c-3"}}"#);
    h.run(200);
    h.send_raw(ann, r#"{"id":29,"method":"send_message","params":{"session_id":"s1","text":"a long request please","client_msg_id":"c-4"}}"#);
    h.tick();
    h.send_raw(bob, r#"{"id":7,"method":"cancel_turn","params":{"session_id":"s1"}}"#);
    h.send_raw(ann, r#"{"id":30,"method":"cancel_turn","params":{"session_id":"s1"}}"#);
    h.run(100);
    dump(&h, ann, "ann fail/cancel");
    dump(&h, bob, "bob fail/cancel");
    // host votes alone
    h.send_raw(ann, r#"{"id":31,"method":"send_message","params":{"session_id":"s1","text":"/plan x","client_msg_id":"c-5"}}"#);
    h.run(200);
    h.send_raw(HOST, r#"{"id":40,"method":"vote_plan","params":{"vote_id":"v3","approve":false}}"#);
    h.run(200);
    h.send_raw(ann, r#"{"id":32,"method":"vote_plan","params":{"vote_id":"v3","approve":true}}"#);
    h.tick();
    dump(&h, ann, "ann host-decides");
    dump(&h, HOST, "host");
    // rejoin with since_seq
    let mid = 20;
    let carl = h.open("10.0.0.3:5000");
    h.send_raw(carl, &format!(r#"{{"id":1,"method":"authenticate","params":{{"token":"{tok}","display_name":"Ann"}}}}"#));
    h.tick();
    h.send_raw(carl, &format!(r#"{{"id":2,"method":"join_session","params":{{"session_id":"s1","since_seq":{mid}}}}}"#));
    h.tick();
    h.send_raw(carl, r#"{"id":3,"method":"join_session","params":{"session_id":"s1","since_seq":9999}}"#);
    h.tick();
    dump(&h, carl, "carl join since");
    // presence: bob closes, resumes
    let bob_resume = h.frames(bob).iter().find(|f| f["id"] == 1).unwrap()["result"]["resume_token"].as_str().unwrap().to_string();
    h.close(bob);
    h.tick();
    let bob2 = h.open("10.0.0.2:5001");
    h.send_raw(bob2, &format!(r#"{{"id":1,"method":"authenticate","params":{{"token":"{tok}","display_name":"Bob","resume_token":"{bob_resume}"}}}}"#));
    h.tick();
    h.send_raw(bob2, r#"{"id":2,"method":"join_session","params":{"session_id":"s1","since_seq":60}}"#);
    h.tick();
    dump(&h, bob2, "bob2 resume");
    dump(&h, ann, "ann presence");
    // host admin
    h.send_raw(HOST, r#"{"id":41,"method":"mute","params":{"participant_id":"p2","muted":true}}"#);
    h.send_raw(HOST, r#"{"id":42,"method":"rename_session","params":{"session_id":"s1","title":"Fix login bug"}}"#);
    h.send_raw(HOST, r#"{"id":43,"method":"fork_session","params":{"session_id":"s1"}}"#);
    h.tick();
    h.send_raw(HOST, r#"{"id":44,"method":"clear_session","params":{"session_id":"s1"}}"#);
    h.send_raw(HOST, r#"{"id":45,"method":"rotate_share","params":{"share_id":"sh1"}}"#);
    h.send_raw(HOST, r#"{"id":46,"method":"kick","params":{"participant_id":"p3"}}"#);
    h.send_raw(HOST, r#"{"id":47,"method":"leave_session","params":{"session_id":"s1"}}"#);
    h.send_raw(HOST, r#"{"id":48,"method":"admit","params":{"participant_id":"p1"}}"#);
    h.tick();
    h.send_raw(bob2, r#"{"id":3,"method":"send_message","params":{"session_id":"s1","text":"x","client_msg_id":"b-9"}}"#);
    h.tick();
    dump(&h, HOST, "host admin");
    dump(&h, bob2, "bob2 admin");
    dump(&h, carl, "carl kicked");
    // lobby
    h.send_raw(HOST, r#"{"id":50,"method":"mint_share","params":{"workspaces":["w1"],"admission_required":true,"collaborative":false,"consensus_required":false,"role":"participant","expires_in_ms":3600000,"max_uses":3,"vote_deadline_ms":60000}}"#);
    h.tick();
    let tok2 = h.frames(HOST).iter().find(|f| f["id"] == 50).unwrap()["result"]["token"].as_str().unwrap().to_string();
    let dan = h.open("10.0.0.4:5000");
    h.send_raw(dan, &format!(r#"{{"id":1,"method":"authenticate","params":{{"token":"{tok2}","display_name":"Dan"}}}}"#));
    h.tick();
    h.send_raw(dan, r#"{"id":2,"method":"list_sessions","params":{}}"#);
    h.tick();
    h.send_raw(HOST, r#"{"id":51,"method":"admit","params":{"participant_id":"p4"}}"#);
    h.tick();
    let eve = h.open("10.0.0.5:5000");
    h.send_raw(eve, &format!(r#"{{"id":1,"method":"authenticate","params":{{"token":"{tok2}","display_name":"Eve"}}}}"#));
    h.tick();
    dump(&h, dan, "dan lobby");
    dump(&h, eve, "eve 1:1");
    dump(&h, HOST, "host lobby");
    // revoke
    h.send_raw(HOST, r#"{"id":52,"method":"revoke_share","params":{"share_id":"sh2"}}"#);
    h.tick();
    h.tick();
    dump(&h, dan, "dan revoked");
    dump(&h, HOST, "host revoke");
    // auth timeout
    let f = h.open("10.0.0.6:5000");
    h.run(10_100);
    dump(&h, f, "auth timeout");
    println!("closed: {:?}", h.sinks[&f].closed.lock().unwrap());
    // rate limit
    let g = h.open("10.0.0.7:5000");
    for i in 0..45 { h.send_raw(g, &format!(r#"{{"id":{i},"method":"ping"}}"#)); }
    h.tick();
    dump(&h, g, "rate");
    // grace expiry
    h.close(bob2);
    h.run(30_100);
    dump(&h, HOST, "host grace");
}
