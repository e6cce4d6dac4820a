//! The writes: create, update, patch (merge, JSON, apply), delete, and the test API's upsert.
//! Each ends in [`Store::write`] or [`Store::commit_delete`], which keep the resourceVersion,
//! the history and the watches in step.

use serde_json::{json, Value};

use super::fields::{self, Scope};
use super::status::ApiError;
use super::store::{
    keep_system_metadata, meta_mut, meta_str, now_rfc3339, present, splitmix, ObjKey, Patch,
    Preconditions, Store, WriteCtx,
};
use super::Kind;

impl Store {
    /// POST: create.
    pub fn create(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        mut body: Value,
        ctx: &WriteCtx,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        check_types(&body, kind)?;
        let name = match meta_str(&body, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match meta_str(&body, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => {
                    let suffix: String = splitmix(self.uid_seed ^ (self.uids + 1) ^ 0x5eed)
                        .to_string()
                        .chars()
                        .take(5)
                        .collect();
                    self.uids += 1;
                    format!("{prefix}{suffix}")
                }
                None => {
                    return Err(ApiError::invalid(
                        &kind.kind_group(),
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            },
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                &kind.kind_group(),
                &name,
                "metadata.name",
                &format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
            ));
        }
        check_namespace(&body, kind, ns)?;
        let key = ObjKey::new(kind, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&kind.resource(), &name));
        }
        body["apiVersion"] = Value::String(kind.api_version());
        body["kind"] = Value::String(kind.kind.clone());
        if kind.status_subresource && !keep_status {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        let uid = self.new_uid();
        let meta = meta_mut(&mut body);
        for k in fields::SYSTEM_METADATA {
            meta.remove(k);
        }
        meta.insert("name".into(), Value::String(name.clone()));
        if kind.namespaced {
            meta.insert("namespace".into(), json!(ns.unwrap_or_default()));
        }
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        let scope = if keep_status {
            Scope::Main {
                status_subresource: false,
            }
        } else {
            kind.main_scope()
        };
        let mut entries = Vec::new();
        fields::record_update(
            &mut entries,
            &json!({}),
            &body,
            scope,
            &ctx.manager,
            &kind.api_version(),
            &now_rfc3339(),
        );
        fields::write_managed(&mut body, &entries);
        Ok(self.write(kind, key, None, body, ctx.dry_run).0)
    }

    fn existing(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(ObjKey, Value), ApiError> {
        let key = ObjKey::new(kind, ns, name);
        match self.objects.get(&key) {
            Some(v) => Ok((key, v.clone())),
            None => Err(ApiError::not_found(&kind.resource(), name)),
        }
    }

    /// A non-apply write (PUT, merge/JSON patch) of `candidate` over the current object, within
    /// `scope`: what is outside the scope and the server's metadata are kept from the current
    /// object, and the manager takes ownership of what it changed.
    fn update_with(
        &mut self,
        kind: &Kind,
        key: ObjKey,
        current: Value,
        candidate: Value,
        scope: Scope,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if let Some(rv) = meta_str(&candidate, "resourceVersion") {
            if Some(rv) != meta_str(&current, "resourceVersion") {
                return Err(ApiError::conflict(&kind.resource(), &key.name));
            }
        }
        let mut new = current.clone();
        if let (Some(dst), Some(src)) = (new.as_object_mut(), candidate.as_object()) {
            dst.retain(|k, _| !scope.covers_top_level(k));
            for (k, v) in src {
                if scope.covers_top_level(k) {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
        keep_system_metadata(&current, &mut new);
        new["apiVersion"] = current["apiVersion"].clone();
        new["kind"] = current["kind"].clone();
        let mut entries = fields::read_managed(&current);
        fields::record_update(
            &mut entries,
            &current,
            &new,
            scope,
            &ctx.manager,
            &kind.api_version(),
            &now_rfc3339(),
        );
        fields::write_managed(&mut new, &entries);
        Ok(self.write(kind, key, Some(&current), new, ctx.dry_run).0)
    }

    /// PUT (on the object or its status).
    pub fn update(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        body: Value,
        scope: Scope,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        check_types(&body, kind)?;
        if let Some(body_name) = meta_str(&body, "name") {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        check_namespace(&body, kind, ns)?;
        let (key, current) = self.existing(kind, ns, name)?;
        if meta_str(&body, "resourceVersion").is_none_or(str::is_empty)
            && !kind.unconditional_update
        {
            return Err(ApiError::invalid(
                &kind.kind_group(),
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        self.update_with(kind, key, current, body, scope, ctx)
    }

    /// PATCH (on the object or its status). Returns the object and whether it was created
    /// (an apply creates a missing object).
    pub fn patch(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        patch: Patch,
        scope: Scope,
        ctx: &WriteCtx,
    ) -> Result<(Value, bool), ApiError> {
        let found = self.existing(kind, ns, name);
        match patch {
            Patch::Merge(p) => {
                let (key, current) = found?;
                let mut candidate = current.clone();
                json_patch::merge(&mut candidate, &p);
                Ok((
                    self.update_with(kind, key, current, candidate, scope, ctx)?,
                    false,
                ))
            }
            Patch::Json(p) => {
                let (key, current) = found?;
                let mut candidate = current.clone();
                json_patch::patch(&mut candidate, &p).map_err(|e| {
                    ApiError::invalid(&kind.kind_group(), name, "patch", &e.to_string())
                })?;
                Ok((
                    self.update_with(kind, key, current, candidate, scope, ctx)?,
                    false,
                ))
            }
            Patch::Apply { config, force } => {
                self.apply(kind, ns, name, found.ok(), config, force, scope, ctx)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        found: Option<(ObjKey, Value)>,
        config: Value,
        force: bool,
        scope: Scope,
        ctx: &WriteCtx,
    ) -> Result<(Value, bool), ApiError> {
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration is not an object",
            ));
        }
        for (field, want) in [
            ("apiVersion", kind.api_version()),
            ("kind", kind.kind.clone()),
        ] {
            match config.get(field).and_then(Value::as_str) {
                Some(v) if v == want => {}
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                    "the {field} of the apply configuration ({v}) does not match the URL ({want})"
                )))
                }
                None => {
                    return Err(ApiError::invalid(
                        &kind.kind_group(),
                        name,
                        field,
                        "Required value: must be set in an apply configuration",
                    ))
                }
            }
        }
        if meta_str(&config, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&config, "name").unwrap_or_default()
            )));
        }
        check_namespace(&config, kind, ns)?;
        if config
            .pointer("/metadata/managedFields")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let (key, current, created) = match found {
            Some((key, current)) => {
                if let Some(rv) = meta_str(&config, "resourceVersion") {
                    if Some(rv) != meta_str(&current, "resourceVersion") {
                        return Err(ApiError::conflict(&kind.resource(), name));
                    }
                }
                (key, current, false)
            }
            None if scope == Scope::Status => {
                return Err(ApiError::not_found(&kind.resource(), name))
            }
            None => {
                let mut fresh = json!({
                    "apiVersion": kind.api_version(),
                    "kind": kind.kind,
                    "metadata": {"name": name},
                });
                if !valid_name(name) {
                    return Err(ApiError::invalid(
                        &kind.kind_group(),
                        name,
                        "metadata.name",
                        "Invalid value: not a lowercase RFC 1123 subdomain",
                    ));
                }
                let meta = meta_mut(&mut fresh);
                if kind.namespaced {
                    meta.insert("namespace".into(), json!(ns.unwrap_or_default()));
                }
                meta.insert("uid".into(), Value::String(self.new_uid()));
                meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
                (ObjKey::new(kind, ns, name), fresh, true)
            }
        };
        let restricted = fields::restrict(&config, scope);
        let mut merged = fields::apply(
            &current,
            &restricted,
            scope,
            &ctx.manager,
            force,
            &kind.api_version(),
            &now_rfc3339(),
        )
        .map_err(|conflicts| ApiError::apply_conflict(&kind.resource(), name, &conflicts))?;
        keep_system_metadata(&current, &mut merged);
        let old = (!created).then_some(&current);
        let (object, _) = self.write(kind, key, old, merged, ctx.dry_run);
        Ok((object, created))
    }

    /// DELETE: removes the object, or (with finalizers) marks it for deletion. Returns the
    /// object and whether it is gone.
    pub fn delete(
        &mut self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let (key, current) = self.existing(kind, ns, name)?;
        if let Some(uid) = &pre.uid {
            let actual = meta_str(&current, "uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::precondition_failed(
                    &kind.resource(),
                    name,
                    format!("UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(rv) = &pre.resource_version {
            let actual = meta_str(&current, "resourceVersion").unwrap_or_default();
            if rv != actual {
                return Err(ApiError::precondition_failed(
                    &kind.resource(),
                    name,
                    format!("ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"),
                ));
            }
        }
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta_str(&current, "deletionTimestamp").is_some() {
                return Ok((present(&current, kind), false));
            }
            let mut marked = current.clone();
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok((
                self.write(kind, key, Some(&current), marked, dry_run).0,
                false,
            ));
        }
        if dry_run {
            return Ok((present(&current, kind), true));
        }
        Ok((self.commit_delete(kind, &key, current), true))
    }

    /// The test API's upsert (`kubectl apply` with a client-side manager): the object as
    /// given, status included (tests seed status this way); a missing status keeps the
    /// current one.
    pub fn put(&mut self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let kind = self.kind_of(api_version, kind_name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind \"{kind_name}\" is registered for version \"{api_version}\""
            ))
        })?;
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let ns = kind
            .namespaced
            .then(|| meta_str(&obj, "namespace").unwrap_or("default").to_string());
        let ctx = WriteCtx {
            manager: "kubectl-client-side-apply".into(),
            dry_run: false,
        };
        match self.existing(&kind, ns.as_deref(), &name) {
            Err(_) => self.create(&kind, ns.as_deref(), obj, &ctx, true),
            Ok((key, current)) => {
                let mut candidate = obj;
                if candidate.get("status").is_none() {
                    if let Some(status) = current.get("status") {
                        candidate["status"] = status.clone();
                    }
                }
                let scope = Scope::Main {
                    status_subresource: false,
                };
                if let Some(m) = candidate.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                self.update_with(&kind, key, current, candidate, scope, &ctx)
            }
        }
    }
}

/// DNS-1123 subdomain (object names of most kinds).
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn check_types(body: &Value, kind: &Kind) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the request body is not an object"));
    }
    if let Some(v) = body.get("apiVersion").and_then(Value::as_str) {
        if v != kind.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str) {
        if k != kind.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
    }
    Ok(())
}

fn check_namespace(body: &Value, kind: &Kind, ns: Option<&str>) -> Result<(), ApiError> {
    if !kind.namespaced {
        return Ok(());
    }
    match meta_str(body, "namespace") {
        Some(body_ns) if !body_ns.is_empty() && Some(body_ns) != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}
