use std::sync::Arc;
use std::time::Duration;

use super::*;

fn keys() -> Arc<VirtualKeys> {
    let config = Config::from_toml_str(
        "[[tenants]]\nname = \"acme\"\ntier = \"pro\"\nkeys = [\"sk-config\"]\n",
        &|_| None,
    )
    .unwrap();
    VirtualKeys::new(State::memory(), Arc::new(config))
}

fn input(json: &str) -> KeyInput {
    parse_input(json.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_created_key_authenticates_and_only_its_digest_is_kept() {
    let keys = keys();
    let (record, secret) = keys
        .create(input(r#"{"tenant":"acme","models":["gpt-*"]}"#))
        .await
        .unwrap();
    assert!(secret.starts_with(SECRET_PREFIX));
    let stored = serde_json::to_string(&keys.get(&record.id).await.unwrap()).unwrap();
    assert!(!stored.contains(&secret));
    assert!(stored.contains(&hex(&digest(&secret))));
    let key = keys.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!(key.record.id, record.id);
    assert_eq!(keys.tier_of(&key).as_deref(), Some("pro"));
    assert!(key.allows_model("gpt-4o"));
    assert!(!key.allows_model("claude-3"));
    assert!(keys.authenticate("sk-sluice-nope").await.unwrap().is_none());
    assert!(!record.view(0).to_string().contains(&secret));
}

#[tokio::test]
async fn revoked_expired_and_rotated_out_secrets_are_refused() {
    let keys = keys();
    let (a, secret_a) = keys.create(input(r#"{"tenant":"acme"}"#)).await.unwrap();
    keys.revoke(&a.id).await.unwrap();
    let e = keys.authenticate(&secret_a).await.unwrap_err();
    assert_eq!(e.status, 401);
    assert!(e.message.contains("revoked"), "{}", e.message);

    let (b, old) = keys.create(input(r#"{"tenant":"acme"}"#)).await.unwrap();
    let (_, new) = keys.rotate(&b.id, Some(Duration::ZERO)).await.unwrap();
    assert!(keys.authenticate(&new).await.unwrap().is_some());
    // No grace: the old secret is gone at once.
    assert!(keys.authenticate(&old).await.unwrap().is_none());

    let (c, old) = keys.create(input(r#"{"tenant":"acme"}"#)).await.unwrap();
    let (rotated, new) = keys.rotate(&c.id, None).await.unwrap();
    assert!(keys.authenticate(&old).await.unwrap().is_some());
    assert!(keys.authenticate(&new).await.unwrap().is_some());
    assert_eq!(rotated.secrets.len(), 2);
    // Past its grace period the old secret is refused as rotated.
    let mut record = keys.get(&c.id).await.unwrap();
    record.secrets[0].expires_ms = Some(1);
    record.updated_ms += 1;
    keys.install(record);
    let e = keys.authenticate(&old).await.unwrap_err();
    assert!(e.message.contains("rotated"), "{}", e.message);

    // An expiry is checked on each request, from memory.
    let mut record = keys.get(&c.id).await.unwrap();
    record.expires_ms = Some(1);
    record.updated_ms += 2;
    keys.install(record);
    let e = keys.authenticate(&new).await.unwrap_err();
    assert!(e.message.contains("expired"), "{}", e.message);
}

#[tokio::test]
async fn unknown_ids_and_bad_grace_name_their_field() {
    let keys = keys();
    match keys.revoke("key_missing").await {
        Err(KeyError::NotFound(id)) => assert_eq!(id, "key_missing"),
        other => panic!("{other:?}"),
    }
    let (k, _) = keys.create(input(r#"{"tenant":"acme"}"#)).await.unwrap();
    match keys.rotate(&k.id, Some(MAX_GRACE * 2)).await {
        Err(KeyError::Input(e)) => assert_eq!(e.field, "grace_seconds"),
        other => panic!("{other:?}"),
    }
    let updated = keys
        .update(&k.id, input(r#"{"rpm":5,"name":"ci"}"#))
        .await
        .unwrap();
    assert_eq!(updated.rpm, Some(5));
    assert_eq!(keys.local(&k.id).unwrap().record.rpm, Some(5));
    assert_eq!(keys.list().await.unwrap().len(), 1);
}

#[test]
fn the_negative_cache_is_bounded() {
    let keys = keys();
    for i in 0..(NEGATIVE_MAX + 10) as u32 {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_le_bytes());
        keys.remember_unknown(d, 5);
    }
    assert!(keys.negative.lock().len() <= NEGATIVE_MAX);
}
