//! Authentication sections: JWT (issuer discovery, scopes) and mTLS identities.

use super::*;

#[test]
fn jwt_with_the_issuer_alone_discovers_keys_and_maps_scopes() {
    let loaded = parse(&format!(
        r#"
listen = "127.0.0.1:9000"
[auth]
mode = "jwt"
[auth.jwt]
issuer = "https://idp.example.com/realms/acme"
resource_url = "https://relay.example.com"
groups_claim = "roles"
[auth.jwt.scopes]
"mcp:a" = ["a"]
"mcp:all" = ["*"]
{SH_TOOL}"#
    ))
    .expect("valid");
    let AuthConfig::Jwt(j) = &loaded.config.auth else {
        panic!("jwt");
    };
    assert!(matches!(j.keys, crate::auth::KeySource::Remote(_)));
    assert!(j.audience.is_empty());
    assert_eq!(j.resource.url.as_deref(), Some("https://relay.example.com"));
    let scopes = j.scopes.as_ref().expect("scopes");
    assert_eq!(scopes.granting("a"), ["mcp:a", "mcp:all"]);
    assert_eq!(j.groups_claim, "roles");
}

#[test]
fn jwt_problems_name_the_key() {
    let found = problems(&format!(
        r#"
[auth]
mode = "jwt"
[auth.jwt]
issuer = "http://idp.example.com"
resource_url = "https://relay.example.com/prefix"
scopes = {{ "mcp:a" = "a" }}
{SH_TOOL}"#
    ));
    let all = found.join("\n");
    assert!(
        all.contains("auth.jwt.issuer") && all.contains("not an https URL"),
        "{all}"
    );
    assert!(
        all.contains("auth.jwt.resource_url") && all.contains("not an origin"),
        "{all}"
    );
    assert!(all.contains("auth.jwt.scopes.mcp:a"), "{all}");
    let found = problems(
        "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_file = \"x.json\"\njwks_url = \"https://i/k\"\n",
    );
    let all = found.join("\n");
    assert!(
        all.contains("auth.jwt.issuer") && all.contains("missing"),
        "{all}"
    );
    assert!(all.contains("not both"), "{all}");
}

#[test]
fn mtls_needs_a_client_ca_and_a_name_to_match() {
    let all = problems(&format!(
        "[auth]\nmode = \"mtls\"\n[[auth.cert]]\nuser = \"a\"\ntools = [\"a\"]\n{SH_TOOL}"
    ))
    .join("\n");
    assert!(
        all.contains("`subject_cn`") && all.contains("`san`"),
        "{all}"
    );
    let all = problems(&format!(
        "[auth]\nmode = \"mtls\"\n[[auth.cert]]\nuser = \"a\"\nsan = \"a@example.com\"\n{SH_TOOL}"
    ))
    .join("\n");
    assert!(all.contains("client_ca"), "{all}");
}

#[test]
fn on_revoke_is_end_or_next_call() {
    let hash = crate::auth::hash_token("alice-secret");
    let cfg = |v: &str| {
        format!(
            "[auth]\nmode = \"tokens\"\non_revoke = \"{v}\"\n[[auth.token]]\nuser = \"alice\"\n\
             sha256 = \"{hash}\"\ntools = [\"*\"]\n{SH_TOOL}"
        )
    };
    assert_eq!(
        parse(SH_TOOL).expect("valid").config.on_revoke,
        OnRevoke::End
    );
    assert_eq!(
        parse(&cfg("end")).expect("valid").config.on_revoke,
        OnRevoke::End
    );
    assert_eq!(
        parse(&cfg("next_call")).expect("valid").config.on_revoke,
        OnRevoke::NextCall
    );
    let found = problems(&cfg("later"));
    assert!(
        found
            .iter()
            .any(|p| p.contains("auth.on_revoke") && p.contains("\"next_call\"")),
        "{found:?}"
    );
}

#[test]
fn a_jwks_file_is_read_like_a_fetched_set() {
    let dir = std::env::temp_dir().join(format!("mcp-bridge-jwks-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = |keys: &str| {
        let file = dir.join("jwks.json");
        std::fs::write(&file, keys).expect("write");
        format!(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nissuer = \"https://idp.example.com\"\njwks_file = \"{}\"\naudience = \"relay\"\n{SH_TOOL}",
            file.display()
        )
    };
    // An unknown key type is left out (with a warning), not a reason to refuse the file.
    let loaded = parse(&config(
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"},{"kty":"weird","kid":"b"}]}"#,
    ));
    let loaded = loaded.expect("valid");
    let AuthConfig::Jwt(j) = &loaded.config.auth else {
        panic!("jwt");
    };
    let crate::auth::KeySource::File(set) = &j.keys else {
        panic!("file keys");
    };
    assert_eq!(set.keys.len(), 1);
    assert!(set.find("a").is_some());
    let warned = loaded
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        warned.contains("auth.jwt.jwks_file") && warned.contains("1 of the keys"),
        "{warned}"
    );
    // A key that cannot verify anything (an RSA modulus that is not base64url) is no key: a
    // file left without one is refused at load, not by every token later.
    let unusable = problems(&config(r#"{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}"#)).join("\n");
    let encryption = problems(&config(
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","use":"enc"}]}"#,
    ))
    .join("\n");
    let not_json = problems(&config("<html>")).join("\n");
    let _ = std::fs::remove_dir_all(&dir);
    for all in [&unusable, &encryption] {
        assert!(
            all.contains("auth.jwt.jwks_file")
                && all.contains("not a JWKS with a usable signing key")
                && all.contains("none of its 1 keys is usable"),
            "{all}"
        );
    }
    assert!(
        not_json.contains("auth.jwt.jwks_file") && not_json.contains("not a JWKS"),
        "{not_json}"
    );
}

#[test]
fn users_and_token_hashes_are_checked_alike_in_every_table() {
    let hash = crate::auth::hash_token("user-secret");
    let all = problems(&format!(
        "[metrics]\nlisten = \"127.0.0.1:9090\"\n[auth]\nmode = \"tokens\"\n\
         [[auth.token]]\nuser = \" \"\nsha256 = \"{hash}\"\n\
         [[auth.token]]\nuser = \"b\"\nsha256 = \"the-token\"\n\
         [[auth.token]]\ntools = [\"a\"]\n\
         [[admin.token]]\nsha256 = \"sha256:12\"\n\
         [[admin.token]]\nname = \"ops\"\n{SH_TOOL}"
    ))
    .join("\n");
    let bad_hash = "expected `sha256:` and 64 hex digits";
    for want in [
        "`auth.token[0].user`: is empty: give the user's name",
        &format!("`auth.token[1].sha256`: {bad_hash}"),
        "`auth.token[2].user`: missing",
        "`auth.token[2].sha256`: missing",
        &format!("`admin.token[0].sha256`: {bad_hash}"),
        "`admin.token[1].sha256`: missing",
    ] {
        assert!(all.contains(want), "no `{want}` in:\n{all}");
    }
    let all = problems(&format!(
        "[auth]\nmode = \"mtls\"\nclient_ca = \"ca.pem\"\n[[auth.cert]]\nuser = \"\"\nsan = \"a\"\n\
         [[auth.cert]]\nsan = \"b\"\n{SH_TOOL}"
    ))
    .join("\n");
    for want in [
        "`auth.cert[0].user`: is empty: give the user's name",
        "`auth.cert[1].user`: missing",
    ] {
        assert!(all.contains(want), "no `{want}` in:\n{all}");
    }
}
