//! `tenancy.export_organization`: every row of one organization, from one snapshot, as JSON lines
//! (docs/lifecycle.md, "Export"). Who may export, and what an administrator's export refuses to
//! read, is decided here; the header (the organization, the tables, the references outside it) is
//! `tenancy._export_header`'s (sql/lifecycle.sql).
//!
//! The row lines are written as `COPY ... TO` writes its rows: each table is read by one query
//! whose rows go straight from the executor to a receiver (`LineReceiver`) that formats the line
//! and appends it to the result's tuplestore. No row is copied into an SPI result, no whole-row
//! value is formed, and no more than `maintenance_work_mem` is held in memory (the tuplestore
//! spills to a file past that; an export is a maintenance operation, as `CREATE INDEX` is). A row line is `[<table index>, <value>, ...]`: the index into the header's
//! `tables` and `columns`, then the row's values in column order, each byte for byte what
//! `row_to_json` writes for it, written by the function `row_to_json` itself uses for its kind
//! (`escape_json`, `JsonEncodeDateTime`, the type's output function, `array_to_json`,
//! `row_to_json`, a type's cast to json), chosen once per column, not once per value. (Column
//! names once per table rather than once per row: the lines are about as long as `COPY`'s.)
//!
//! One snapshot: every statement runs through SPI in read-only mode, which executes it with the
//! snapshot of the query that called `export_organization` (the header function is STABLE, so its
//! statements do too), at any isolation level.
use std::ffi::{CStr, CString};

use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB, Uuid};

use crate::context::{acting_administrator, current_user_id, LifecycleScope};
use crate::errors::{spi, Error};
use crate::lifecycle::{as_catalog_owner, organization};
use crate::security;

/// May the caller export organization `org`? A tenancy administrator acting as itself (any
/// organization, also a deactivated one), or the current user when its role in the (active)
/// organization may manage it (owner).
fn may_export(org: Uuid) -> bool {
    if acting_administrator() {
        return true;
    }
    let Some(user) = current_user_id() else { return false };
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM tenancy.memberships m JOIN tenancy.roles r ON r.name OPERATOR(pg_catalog.=) m.role \
                          JOIN tenancy.organizations o ON o.id OPERATOR(pg_catalog.=) m.organization_id \
                         WHERE m.organization_id OPERATOR(pg_catalog.=) $1 AND m.user_id OPERATOR(pg_catalog.=) $2 \
                           AND m.is_active AND o.is_active AND r.can_manage_organization)",
        &[org.into(), user.into()],
    ))
    .unwrap_or(false)
}

/// Every row of organization `org` in every registered tenant table, parents before children, as
/// JSON lines: a header line (with each table's columns), `[<table index>, <values>...]` per row,
/// an end line with the counts. See the module's comment for how the lines are written and why they share a snapshot.
/// The reading scope is entered for the reads only, and it has ended before any line reaches the
/// caller (materialize mode).
#[pg_extern(
    volatile,
    parallel_unsafe,
    sql = r#"CREATE  FUNCTION "export_organization"(
	"organization_id" uuid /* Option < Uuid > */
) RETURNS TABLE (
	"line" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'export_organization_wrapper';"#
)]
pub fn export_organization(organization_id: Option<Uuid>, fcinfo: pg_sys::FunctionCallInfo) {
    // SAFETY: fcinfo is this call's; checked before anything is read.
    let rsinfo = unsafe { result_set_of(fcinfo) };
    let Some(org) = organization_id else {
        Error::NullArgument.raise("tenancy: organization_id must not be NULL", "Pass an organization id.")
    };
    let Some((_, slug)) = organization(org) else {
        Error::UnknownOrganization.raise(
            format!("tenancy: organization {org} does not exist"),
            "List organizations with SELECT id, slug, name FROM tenancy.organizations.",
        )
    };
    if !may_export(org) {
        Error::InsufficientPrivilege.raise(
            format!("tenancy: may not export organization {org}"),
            "An organization's owner (as the current user, SET LOCAL tenancy.user_id) may export its own active \
             organization; a tenancy administrator acting as itself may export any.",
        )
    }
    spi(Spi::connect_mut(|c| {
        c.update(
            "SELECT tenancy._privileged('log_lifecycle', pg_catalog.jsonb_build_object('operation', 'export_organization', \
                    'organization_id', $1, 'user_id', $2))",
            None,
            &[org.into(), current_user_id().into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(())
    }));
    // The tenant tables, parents first, with their tenant columns (read as the catalog owner).
    let tables = as_catalog_owner(|| {
        spi(Spi::get_one::<JsonB>(
            "SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('relid', x.t::pg_catalog.oid, \
                    'tenant_column', tt.tenant_column, 'column_type', tt.column_type) ORDER BY x.n), '[]') \
               FROM pg_catalog.unnest(tenancy._fk_order(ARRAY(SELECT t.relid FROM tenancy.tenant_tables t \
                      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid::pg_catalog.oid))) WITH ORDINALITY x(t, n) \
               JOIN tenancy.tenant_tables tt ON tt.relid OPERATOR(pg_catalog.=) x.t",
        ))
    })
    .unwrap_or(JsonB(serde_json::json!([])));
    // The reads run as the caller, in the export's scope: on Citus only where the shards let them.
    let role = security::current_role();
    for t in tables.0.as_array().into_iter().flatten() {
        let rel = relid_of(t);
        crate::lifecycle::require_scope_reaches(rel, &regclass_text(rel), role, "export");
    }
    if acting_administrator() {
        refuse_owner_code_for_administrator(&tables);
    }
    let value = |column_type: &str| if column_type == "text" { slug.clone() } else { org.to_string() };
    let _scope = LifecycleScope::enter(org, Some(slug.clone()), false, false);
    // SAFETY: rsinfo was checked by result_set_of; the export's reads run inside this call.
    unsafe {
        let mut out = ExportResult::begin(rsinfo);
        out.write_lines(org, &tables, value);
    }
}

/// An administrator's export reads every tenant table with its own rights, so no table owned by
/// another role may carry that owner's code into the read: a policy tenancy did not write (it runs
/// for the reader), a column whose type is not built in (its output function or a cast to json, run
/// by to_jsonb; enums without such a cast aside), or something other than a table in its tree.
/// Such tables are refused (0A000), not read.
fn refuse_owner_code_for_administrator(tables: &JsonB) {
    let listed = spi(Spi::get_one_with_args::<String>(
        include_str!("queries/export_refusal.sql"),
        &[JsonB(tables.0.clone()).into(), security::current_role().into()],
    ));
    if let Some(listed) = listed {
        Error::FeatureNotSupported.raise(
            format!("tenancy.export_organization: reading {listed} could run its owner's code with an administrator's rights"),
            "A policy tenancy did not write, a column type that is not built in, or a relation that is not a table would \
             run for the reader. Export as the tables' owner (or as the organization's owner, through the application), \
             or remove that code first.",
        )
    }
}

/// The ReturnSetInfo of a set-returning call that accepts a materialized result.
///
/// # Safety
/// `fcinfo` must be the FunctionCallInfo of the current call.
unsafe fn result_set_of(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::ReturnSetInfo {
    let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
    if rsinfo.is_null()
        || !pgrx::is_a(rsinfo as *mut pg_sys::Node, pg_sys::NodeTag::T_ReturnSetInfo)
        || (*rsinfo).allowedModes & pg_sys::SetFunctionReturnMode::SFRM_Materialize as i32 == 0
        || (*rsinfo).expectedDesc.is_null()
    {
        Error::FeatureNotSupported.raise(
            "tenancy.export_organization: set-valued function called in context that cannot accept a set",
            "SELECT * FROM tenancy.export_organization(...)",
        )
    }
    rsinfo
}

/// The result of the current call: a tuplestore of one text column, handed to the caller in
/// materialize mode.
struct ExportResult {
    store: *mut pg_sys::Tuplestorestate,
    desc: pg_sys::TupleDesc,
}

impl ExportResult {
    /// Creates the call's tuplestore (in the query's memory) and makes it the call's result.
    ///
    /// # Safety
    /// `rsinfo` must be the current call's, checked by `result_set_of`.
    unsafe fn begin(rsinfo: *mut pg_sys::ReturnSetInfo) -> Self {
        let query_memory = (*(*rsinfo).econtext).ecxt_per_query_memory;
        let old = pg_sys::MemoryContextSwitchTo(query_memory);
        let desc = pg_sys::CreateTupleDescCopy((*rsinfo).expectedDesc);
        let random = (*rsinfo).allowedModes & pg_sys::SetFunctionReturnMode::SFRM_Materialize_Random as i32 != 0;
        // An export is a maintenance operation: its lines stay in memory up to
        // maintenance_work_mem (or work_mem, if larger), as CREATE INDEX's sort does, and go to a
        // temporary file past that.
        let budget = pg_sys::work_mem.max(pg_sys::maintenance_work_mem);
        let store = pg_sys::tuplestore_begin_heap(random, false, budget);
        (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_Materialize;
        (*rsinfo).setResult = store;
        (*rsinfo).setDesc = desc;
        pg_sys::MemoryContextSwitchTo(old);
        ExportResult { store, desc }
    }

    /// Appends one line.
    ///
    /// # Safety
    /// `data` must point to `len` bytes.
    unsafe fn put(&mut self, data: *const std::ffi::c_char, len: usize) {
        let mut value = pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(data, len as i32));
        let mut isnull = false;
        // Raw pointers: PostgreSQL 15 declares them mutable, 18 const (a *mut coerces to both).
        let (value, isnull): (*mut pg_sys::Datum, *mut bool) = (&mut value, &mut isnull);
        pg_sys::tuplestore_putvalues(self.store, self.desc, value, isnull);
    }

    /// The header line, one line per row of every table, the end line; all reads in one SPI
    /// connection, read-only (the snapshot of the calling query).
    ///
    /// # Safety
    /// Called once, inside the call whose result this is.
    unsafe fn write_lines(&mut self, org: Uuid, tables: &JsonB, value: impl Fn(&str) -> String) {
        let header = CString::new(format!(
            "SELECT tenancy._export_header({}::pg_catalog.uuid, {}::pg_catalog.jsonb), \
                    pg_catalog.array_agg(pg_catalog.to_json(x.relid::pg_catalog.regclass::pg_catalog.text)::pg_catalog.text ORDER BY x.n), \
                    'pg_catalog.array_to_json(pg_catalog.anyarray)'::pg_catalog.regprocedure::pg_catalog.oid, \
                    'pg_catalog.row_to_json(pg_catalog.record)'::pg_catalog.regprocedure::pg_catalog.oid \
               FROM ROWS FROM (pg_catalog.jsonb_to_recordset({}::pg_catalog.jsonb) AS (relid pg_catalog.oid)) WITH ORDINALITY x(relid, n)",
            literal(&org.to_string()),
            literal(&tables.0.to_string()),
            literal(&tables.0.to_string()),
        ))
        .expect("no NUL in a query");
        let list = tables.0.as_array().cloned().unwrap_or_default();
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            Error::Internal.raise("tenancy: SPI_connect failed", "Report this as a bug.")
        }
        let row = query_one_row(&header);
        let (line, names, funcs) = (row[0].clone(), row[1].clone(), (oid_of(&row[2]), oid_of(&row[3])));
        let line = line.unwrap_or_default();
        self.put(line.as_ptr() as _, line.len());
        let names = parse_text_array(&names.unwrap_or_default());
        let mut counts = Vec::with_capacity(list.len());
        for (index, (t, json_name)) in list.iter().zip(&names).enumerate() {
            let column = t["tenant_column"].as_str().unwrap_or_default();
            let column_type = t["column_type"].as_str().unwrap_or("uuid");
            let cast = if column_type == "text" { "" } else { "::pg_catalog.uuid" };
            let sql = CString::new(format!(
                "SELECT * FROM {} r WHERE r.{} OPERATOR(pg_catalog.=) {}{cast}",
                regclass_text(relid_of(t)),
                pgrx::spi::quote_identifier(column),
                literal(&value(column_type)),
            ))
            .expect("no NUL in a query");
            let prefix = format!("[{index},");
            let n = LineReceiver::run(&sql, prefix, regclass_text(relid_of(t)), self, funcs);
            counts.push((json_name.clone(), n));
        }
        let rows = counts.iter().map(|(name, n)| format!("{name}: {n}")).collect::<Vec<_>>().join(", ");
        let end = CString::new(format!(
            "SELECT pg_catalog.json_build_object('end', true, 'rows', {}::pg_catalog.jsonb)::pg_catalog.text",
            literal(&format!("{{{rows}}}"))
        ))
        .expect("no NUL in a query");
        let line = query_one_row(&end)[0].clone().unwrap_or_default();
        self.put(line.as_ptr() as _, line.len());
        pg_sys::SPI_finish();
    }
}

/// A table's relid in the tables' list (an oid: a JSON string in jsonb).
fn relid_of(t: &serde_json::Value) -> pg_sys::Oid {
    pg_sys::Oid::from(match &t["relid"] {
        serde_json::Value::String(s) => s.parse::<u32>().unwrap_or(0),
        v => v.as_u64().unwrap_or(0) as u32,
    })
}

/// `'text'` as an SQL literal.
fn literal(s: &str) -> String {
    let c = CString::new(s)
        .unwrap_or_else(|_| Error::InvalidParameter.raise("tenancy: a NUL byte in a value", "Remove it."));
    // SAFETY: quote_literal_cstr reads a NUL-terminated string and returns a palloc'd one.
    unsafe { CStr::from_ptr(pg_sys::quote_literal_cstr(c.as_ptr())).to_string_lossy().into_owned() }
}

/// A relation's name as `regclass` prints it (schema-qualified unless on the search path, quoted
/// where needed): read from the catalog, never from text.
fn regclass_text(rel: pg_sys::Oid) -> String {
    // SAFETY: regclassout of an oid, a palloc'd C string.
    unsafe {
        let out = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_REGCLASSOUT), pg_sys::Datum::from(rel));
        CStr::from_ptr(out).to_string_lossy().into_owned()
    }
}

fn oid_of(v: &Option<String>) -> pg_sys::Oid {
    pg_sys::Oid::from(v.as_deref().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0))
}

/// The elements of a one-dimensional text array's output (`{"a","b"}`), each a JSON string here.
fn parse_text_array(s: &str) -> Vec<String> {
    let inner = s.trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for ch in inner.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
        } else if ch == '\\' && quoted {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
            any = true;
        } else if ch == ',' && !quoted {
            out.push(std::mem::take(&mut cur));
            any = false;
        } else {
            cur.push(ch);
            any = true;
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The first row of a read-only query, its columns as text.
///
/// # Safety
/// Inside an SPI connection.
unsafe fn query_one_row(sql: &CStr) -> Vec<Option<String>> {
    let rc = pg_sys::SPI_execute(sql.as_ptr(), true, 1);
    if rc != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
        Error::Internal.raise(format!("tenancy: internal query failed ({rc})"), "Report this as a bug.")
    }
    let table = pg_sys::SPI_tuptable;
    let desc = (*table).tupdesc;
    let tuple = *(*table).vals;
    (1..=(*desc).natts)
        .map(|i| {
            let v = pg_sys::SPI_getvalue(tuple, desc, i);
            (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
        })
        .collect()
}

/// How `row_to_json` writes a value of a column's type (`json_categorize_type` in PostgreSQL's
/// json.c), decided once per column.
enum Kind {
    Bool,
    /// int2, int4, int8: written here, in decimal.
    Int2,
    Int4,
    Int8,
    /// uuid: written here, as uuid_out does (lowercase, hyphenated).
    Uuid,
    /// text, varchar, bpchar: the value's bytes, escaped here (as escape_json does).
    Varlena,
    /// Integers, floats and numeric: as written by the output function, quoted when it is not
    /// a JSON number (NaN, Infinity).
    Number,
    /// date, timestamp, timestamptz: ISO 8601 (`JsonEncodeDateTime`), whatever DateStyle says.
    DateTime(pg_sys::Oid),
    /// json and jsonb: their text, as is.
    Json,
    /// Through a function that returns json: `array_to_json`, `row_to_json`, or a type's cast to
    /// json (user-defined types only, as in PostgreSQL).
    Function,
    /// Anything else: the output function's text, as a JSON string.
    Text,
}

struct Column {
    kind: Kind,
    /// The output function, or the function of `Kind::Function`.
    func: pg_sys::FmgrInfo,
}

/// A DestReceiver that formats each row of a query as an export line into the result's
/// tuplestore (as `COPY ... TO` formats its rows into its output).
#[repr(C)]
struct LineReceiver {
    /// First, so that a `*mut DestReceiver` is a `*mut LineReceiver`.
    dest: pg_sys::DestReceiver,
    result: *mut ExportResult,
    prefix: Vec<u8>,
    /// The table read, as `regclass` prints it (for the error of a line too long).
    table: String,
    funcs: (pg_sys::Oid, pg_sys::Oid),
    columns: Vec<Column>,
    /// The line being written, laid out as the heap tuple that holds it: the tuple's header
    /// (`LINE_START` - 4 bytes), the `text` value's 4-byte varlena header, then the line; kept as
    /// u64 words for the header's alignment. `store` fills the headers in and hands the tuple to
    /// the tuplestore as it stands (one copy, where forming it from values zeroed and filled a
    /// new tuple first).
    line: Vec<u64>,
    len: usize,
    row_memory: pg_sys::MemoryContext,
    /// Values written through a PostgreSQL function (which allocate) since `row_memory` was
    /// last reset.
    allocations: usize,
    rows: i64,
}

impl LineReceiver {
    /// Runs `sql` (read-only, inside the current SPI connection) with its rows written as lines
    /// prefixed by `prefix`; returns how many.
    ///
    /// # Safety
    /// Inside an SPI connection; `result` outlives the call.
    unsafe fn run(
        sql: &CStr,
        prefix: String,
        table: String,
        result: &mut ExportResult,
        funcs: (pg_sys::Oid, pg_sys::Oid),
    ) -> i64 {
        let mut receiver = Box::new(LineReceiver {
            dest: pg_sys::DestReceiver {
                receiveSlot: Some(receive_slot),
                rStartup: Some(startup),
                rShutdown: Some(shutdown),
                rDestroy: Some(destroy),
                mydest: pg_sys::CommandDest::DestNone,
            },
            result,
            prefix: prefix.into_bytes(),
            table,
            funcs,
            columns: Vec::new(),
            line: vec![0; 128],
            len: LINE_START,
            // In the SPI connection's memory, which outlives the query (the executor's memory,
            // current in `start`, is freed when the query ends).
            row_memory: pg_sys::AllocSetContextCreateInternal(
                pg_sys::CurrentMemoryContext,
                c"tenancy export row".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            ),
            allocations: 0,
            rows: 0,
        });
        let options = pg_sys::SPIExecuteOptions { read_only: true, dest: &mut receiver.dest, ..Default::default() };
        let rc = pg_sys::SPI_execute_extended(sql.as_ptr(), &options);
        // A SELECT whose receiver is not SPI's own reports SPI_OK_UTILITY (DestNone: "the rows
        // are not kept"); they were sent to this receiver all the same.
        if rc != pg_sys::SPI_OK_SELECT as i32 && rc != pg_sys::SPI_OK_UTILITY as i32 {
            Error::Internal.raise(format!("tenancy: export query failed ({rc})"), "Report this as a bug.")
        }
        pg_sys::MemoryContextDelete(receiver.row_memory);
        receiver.rows
    }

    /// # Safety
    /// `typeinfo` is the query's result descriptor.
    unsafe fn start(&mut self, typeinfo: pg_sys::TupleDesc) {
        let desc = pgrx::PgTupleDesc::from_pg_unchecked(typeinfo);
        for att in desc.iter() {
            let (kind, func) = self.kind_of(att.atttypid);
            let mut info: pg_sys::FmgrInfo = std::mem::zeroed();
            pg_sys::fmgr_info(func, &mut info);
            self.columns.push(Column { kind, func: info });
        }
    }

    /// The kind of a type and the function that writes it (as `json_categorize_type`: a domain
    /// is written as its base type).
    unsafe fn kind_of(&self, typid: pg_sys::Oid) -> (Kind, pg_sys::Oid) {
        let base = pg_sys::getBaseType(typid);
        let output = || {
            let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(base, &mut func, &mut varlena);
            func
        };
        match base {
            pg_sys::BOOLOID => (Kind::Bool, output()),
            pg_sys::INT2OID => (Kind::Int2, output()),
            pg_sys::INT4OID => (Kind::Int4, output()),
            pg_sys::INT8OID => (Kind::Int8, output()),
            pg_sys::UUIDOID => (Kind::Uuid, output()),
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => (Kind::Varlena, output()),
            pg_sys::FLOAT4OID | pg_sys::FLOAT8OID | pg_sys::NUMERICOID => (Kind::Number, output()),
            pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => (Kind::DateTime(base), output()),
            pg_sys::JSONOID | pg_sys::JSONBOID => (Kind::Json, output()),
            _ if pg_sys::get_element_type(base) != pg_sys::InvalidOid
                || base == pg_sys::ANYARRAYOID
                || base == pg_sys::ANYCOMPATIBLEARRAYOID
                || base == pg_sys::RECORDARRAYOID =>
            {
                (Kind::Function, self.funcs.0)
            }
            _ if pg_sys::type_is_rowtype(base) => (Kind::Function, self.funcs.1),
            _ if base.to_u32() >= pg_sys::FirstNormalObjectId => {
                let mut cast = pg_sys::InvalidOid;
                let path = pg_sys::find_coercion_pathway(
                    pg_sys::JSONOID,
                    base,
                    pg_sys::CoercionContext::COERCION_EXPLICIT,
                    &mut cast,
                );
                if path == pg_sys::CoercionPathType::COERCION_PATH_FUNC && cast != pg_sys::InvalidOid {
                    (Kind::Function, cast)
                } else {
                    (Kind::Text, output())
                }
            }
            _ => (Kind::Text, output()),
        }
    }

    /// # Safety
    /// `slot` holds a row of the query `start` described.
    ///
    /// Every call into PostgreSQL costs a guard (a sigsetjmp) here, so the common types are
    /// written without one: a row of integers, uuids and text makes two calls (deform, store).
    unsafe fn receive(&mut self, slot: *mut pg_sys::TupleTableSlot) {
        self.len = LINE_START;
        let prefix = std::mem::take(&mut self.prefix);
        self.push(&prefix);
        self.prefix = prefix;
        pg_sys::slot_getallattrs(slot);
        let n = self.columns.len();
        let values = std::slice::from_raw_parts((*slot).tts_values, n);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, n);
        let old = pg_sys::MemoryContextSwitchTo(self.row_memory);
        for i in 0..n {
            if i > 0 {
                self.push(b",");
            }
            if nulls[i] {
                self.push(b"null");
                continue;
            }
            self.value(i, values[i]);
        }
        pg_sys::MemoryContextSwitchTo(old);
        self.push(b"]");
        self.store();
        self.rows += 1;
        if self.allocations >= 1024 {
            pg_sys::MemoryContextReset(self.row_memory);
            self.allocations = 0;
        }
    }

    /// Writes one (non-NULL) value of column `i`.
    unsafe fn value(&mut self, i: usize, value: pg_sys::Datum) {
        match self.columns[i].kind {
            Kind::Bool => self.push(if value.value() != 0 { b"true" } else { b"false" }),
            Kind::Int2 => self.push(format_int(value.value() as i16 as i64).as_bytes()),
            Kind::Int4 => self.push(format_int(value.value() as i32 as i64).as_bytes()),
            Kind::Int8 => self.push(format_int(value.value() as i64).as_bytes()),
            Kind::Uuid => {
                let bytes = std::slice::from_raw_parts(value.cast_mut_ptr::<u8>() as *const u8, 16);
                self.push(&format_uuid(bytes));
            }
            Kind::Varlena => {
                let mut v = value.cast_mut_ptr::<pg_sys::varlena>();
                if pgrx::varlena::varatt_is_1b_e(v) || pgrx::varlena::varatt_is_4b_c(v) {
                    v = pg_sys::pg_detoast_datum_packed(v);
                    self.allocations += 1;
                }
                let bytes = pgrx::varlena::varlena_to_byte_slice(v);
                self.push_json_string(bytes);
            }
            Kind::Number => {
                let s = CStr::from_ptr(pg_sys::OutputFunctionCall(&mut self.columns[i].func, value)).to_bytes();
                self.allocations += 1;
                if matches!(s, b"NaN" | b"Infinity" | b"-Infinity") {
                    self.push_json_string(s);
                } else {
                    self.push(s);
                }
            }
            Kind::DateTime(typid) => {
                let mut buf = [0 as std::ffi::c_char; pg_sys::MAXDATELEN as usize + 1];
                pg_sys::JsonEncodeDateTime(buf.as_mut_ptr(), value, typid, std::ptr::null());
                let s = CStr::from_ptr(buf.as_ptr()).to_bytes();
                self.push(b"\"");
                self.push(s);
                self.push(b"\"");
            }
            Kind::Json => {
                let s = CStr::from_ptr(pg_sys::OutputFunctionCall(&mut self.columns[i].func, value)).to_bytes();
                self.allocations += 1;
                self.push(s);
            }
            Kind::Function => {
                let json = pg_sys::FunctionCall1Coll(&mut self.columns[i].func, pg_sys::InvalidOid, value);
                let s = CStr::from_ptr(pg_sys::text_to_cstring(json.cast_mut_ptr())).to_bytes();
                self.allocations += 2;
                self.push(s);
            }
            Kind::Text => {
                let s = CStr::from_ptr(pg_sys::OutputFunctionCall(&mut self.columns[i].func, value)).to_bytes();
                self.allocations += 1;
                self.push_json_string(s);
            }
        }
    }

    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        let need = self.len + bytes.len();
        if need > self.line.len() * 8 {
            if need > MAX_TUPLE {
                self.too_long()
            }
            self.line.resize(need.div_ceil(8).next_power_of_two(), 0);
        }
        // SAFETY: the buffer holds at least `need` bytes (just checked).
        unsafe {
            let base = self.line.as_mut_ptr() as *mut u8;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(self.len), bytes.len());
        }
        self.len = need;
    }

    /// A line that would not fit in a `text` value (nor its tuple in the tuplestore, which
    /// allocates at most 1 GB at once): stopped with 54000 before its buffer grows past that.
    #[cold]
    fn too_long(&self) -> ! {
        Error::ProgramLimit.raise(
            format!(
                "tenancy.export_organization: a row of {} makes an export line of more than 1 GB, the most a text value can hold",
                self.table
            ),
            "Export that table's large values another way (COPY (SELECT ...) TO a file, per column); nothing was returned.",
        )
    }

    /// `bytes` as a JSON string, escaped exactly as PostgreSQL's `escape_json` does.
    #[inline]
    fn push_json_string(&mut self, bytes: &[u8]) {
        // Most values need no escape: one pass over every byte (no early exit, so the compiler
        // vectorizes it), then a single copy.
        let plain = bytes.iter().fold(true, |ok, &b| ok & (b >= 0x20 && b != b'"' && b != b'\\'));
        self.push(b"\"");
        if plain {
            self.push(bytes);
        } else {
            self.push_escaped(bytes);
        }
        self.push(b"\"");
    }

    /// The body of a JSON string that needs escapes, as `escape_json` writes it.
    #[cold]
    fn push_escaped(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            self.push(&bytes[start..i]);
            if escaped.is_empty() {
                self.push(format!("\\u{b:04x}").as_bytes());
            } else {
                self.push(escaped);
            }
            start = i + 1;
        }
        self.push(&bytes[start..]);
    }

    /// Appends the line to the result: the heap tuple of one `text` column it is laid out as
    /// (its headers set here), copied once into the tuplestore.
    unsafe fn store(&mut self) {
        let base = self.line.as_mut_ptr() as *mut u8;
        let header = base as *mut pg_sys::HeapTupleHeaderData;
        std::ptr::write_bytes(base, 0, TUPLE_HEADER);
        (*header).t_infomask2 = 1; // one attribute
        (*header).t_infomask = pg_sys::HEAP_HASVARWIDTH as u16;
        (*header).t_hoff = TUPLE_HEADER as u8;
        pgrx::varlena::set_varsize_4b(base.add(TUPLE_HEADER) as *mut pg_sys::varlena, (self.len - TUPLE_HEADER) as i32);
        let mut tuple = pg_sys::HeapTupleData {
            t_len: self.len as u32,
            t_self: std::mem::zeroed(),
            t_tableOid: pg_sys::InvalidOid,
            t_data: header,
        };
        pg_sys::tuplestore_puttuple((*self.result).store, &mut tuple);
    }
}

/// The size of a heap tuple's header without a null bitmap, aligned: where its first attribute
/// starts.
const TUPLE_HEADER: usize = (std::mem::offset_of!(pg_sys::HeapTupleHeaderData, t_bits) + 7) & !7;
/// The largest line a heap tuple of one `text` value may hold with its headers: what palloc
/// allocates at once (MaxAllocSize, 1 GB - 1), which is also the largest varlena.
const MAX_TUPLE: usize = 0x3fff_ffff;
/// Where a line's bytes start in `LineReceiver::line`: after the tuple's header and the text
/// value's 4-byte varlena header.
const LINE_START: usize = TUPLE_HEADER + 4;

/// An integer in decimal, as int8out writes it (no allocation; two digits per division).
fn format_int(v: i64) -> IntText {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";
    let mut out = IntText { buf: [0; 21], start: 0 };
    let mut n = v.unsigned_abs();
    let mut i = out.buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        out.buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        out.buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        out.buf[i] = b'0' + n as u8;
    }
    if v < 0 {
        i -= 1;
        out.buf[i] = b'-';
    }
    out.start = i;
    out
}

struct IntText {
    buf: [u8; 21],
    /// The digits are `buf[start..]`.
    start: usize,
}

impl IntText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// A uuid's 16 bytes as uuid_out writes them, quoted.
fn format_uuid(b: &[u8]) -> [u8; 38] {
    let mut out = [b'"'; 38];
    let mut text = [0u8; 36];
    crate::settings::write_uuid(b.try_into().expect("a uuid is 16 bytes"), &mut text);
    out[1..37].copy_from_slice(&text);
    out
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(dest: *mut pg_sys::DestReceiver, _operation: i32, typeinfo: pg_sys::TupleDesc) {
    (*(dest as *mut LineReceiver)).start(typeinfo)
}

#[pg_guard]
unsafe extern "C-unwind" fn receive_slot(slot: *mut pg_sys::TupleTableSlot, dest: *mut pg_sys::DestReceiver) -> bool {
    (*(dest as *mut LineReceiver)).receive(slot);
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown(_dest: *mut pg_sys::DestReceiver) {}

#[pg_guard]
unsafe extern "C-unwind" fn destroy(_dest: *mut pg_sys::DestReceiver) {}

/// In-database tests: the values are exactly what `row_to_json` writes, for every kind of value.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn every_value_is_what_row_to_json_writes() {
        Spi::run(
            r#"
            CREATE TYPE pg_temp_mood AS ENUM ('sad', 'happy');
            CREATE TYPE pg_temp_tagged AS ENUM ('x', 'y');
            CREATE FUNCTION tagged_json(pg_temp_tagged) RETURNS json LANGUAGE sql IMMUTABLE
                AS $$ SELECT pg_catalog.json_build_object('tag', $1::text) $$;
            CREATE CAST (pg_temp_tagged AS json) WITH FUNCTION tagged_json(pg_temp_tagged);
            CREATE DOMAIN posint AS int CHECK (VALUE > 0);
            CREATE TYPE pair AS (a int, b text);
            CREATE TABLE "we""ird" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                b bool, i2 int2, i4 int4, i8 int8, n numeric, f float8, f4 real, d date, ts timestamp, tz timestamptz,
                j json, jb jsonb, arr int[], tarr text[], m pg_temp_mood, tg pg_temp_tagged, p posint, pr pair,
                t text, vc varchar(20), bp char(4), "Odd ""col""" text, bt bytea, iv interval, ip inet, nm name,
                g text GENERATED ALWAYS AS (t || '!') STORED);
            SELECT tenancy.register_table('"we""ird"');
            SELECT tenancy.enable_isolation('"we""ird"');
            SELECT tenancy.create_organization('A', 'a', id => '00000000-0000-0000-0000-0000000000a1');
            SELECT tenancy.create_organization('B', 'b', id => '00000000-0000-0000-0000-0000000000b1');
            SET LOCAL datestyle = 'SQL, DMY';
            SET LOCAL timezone = 'Asia/Kolkata';
            INSERT INTO "we""ird" (organization_id, b, i2, i4, i8, n, f, f4, d, ts, tz, j, jb, arr, tarr, m, tg, p, pr, t, vc, bp,
                                   "Odd ""col""", bt, iv, ip, nm) VALUES
             ('00000000-0000-0000-0000-0000000000a1', true, -32768, 2147483647, -9223372036854775808, 'NaN', 'Infinity', 1.5, '2024-02-03',
              '2024-02-03 04:05:06.7', '2024-02-03 04:05:06+02', '{"a": [1, 2]}', '{"b":1}', '{1,NULL,3}', '{"x,y","q\"z"}',
              'happy', 'y', 5, ROW(1, 'a"b'), E'line\nbreak\t"q"\\ \u0001\u001f\b\f\r\u007fé日本', 'vc', 'ab', NULL, '\x00ff',
              '1 day 2 hours', '10.0.0.1/8', 'nm'),
             ('00000000-0000-0000-0000-0000000000a1', false, 0, -1, 9223372036854775807, 12.50, -0.0, '-Infinity', 'infinity', '-infinity',
              NULL, 'null', '[]', '{}', NULL, 'sad', 'x', 1, NULL, '', NULL, NULL, 'x', NULL, NULL, NULL, NULL),
             ('00000000-0000-0000-0000-0000000000b1', true, 1, 1, 100, 1, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, 'of B', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
            "#,
        )
        .unwrap();
        // A compressed value and one stored out of line.
        Spi::run(
            "INSERT INTO \"we\"\"ird\" (organization_id, t, tarr) \
             SELECT '00000000-0000-0000-0000-0000000000a1'::uuid, repeat('compressible ', 2000), ARRAY[repeat('y', 3000)] \
             UNION ALL \
             SELECT '00000000-0000-0000-0000-0000000000a1'::uuid, \
                    (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g), NULL",
        )
        .unwrap();
        // A row line is [<table index>, <values>...], each value exactly as row_to_json writes it
        // (json_each gives back each value's text as row_to_json wrote it).
        let reference = r#"SELECT '[0,' || (SELECT string_agg(x.value::text, ',' ORDER BY x.ord)
                                               FROM json_each(row_to_json(r)) WITH ORDINALITY x(key, value, ord)) || ']' AS line
                             FROM "we""ird" r WHERE organization_id = '00000000-0000-0000-0000-0000000000a1'"#;
        let exported = "SELECT line FROM tenancy.export_organization('00000000-0000-0000-0000-0000000000a1') \
                         WHERE line LIKE '[%'";
        let differ = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM (({reference} EXCEPT ALL {exported}) UNION ALL ({exported} EXCEPT ALL {reference})) x"
        ))
        .unwrap();
        assert_eq!(differ, Some(0), "the export's values are row_to_json's");
        let lines = Spi::get_one::<i64>(&format!("SELECT count(*) FROM ({exported}) x")).unwrap();
        assert_eq!(lines, Some(4), "the rows of organization A only");
        let end = Spi::get_one::<String>(
            "SELECT line FROM tenancy.export_organization('00000000-0000-0000-0000-0000000000a1') WHERE line LIKE '{\"end\"%'",
        )
        .unwrap();
        assert_eq!(end.as_deref(), Some(r#"{"end" : true, "rows" : {"public.\"we\"\"ird\"": 4}}"#));
        // The header names the table and its columns, in the order of the values.
        let columns = Spi::get_one::<String>(
            "SELECT (line::jsonb->'tables')::text || ' ' || (line::jsonb->'columns'->0)::text \
               FROM tenancy.export_organization('00000000-0000-0000-0000-0000000000a1') WHERE line LIKE '{\"format\"%'",
        )
        .unwrap();
        assert_eq!(
            columns.as_deref(),
            Some(
                r#"["public.\"we\"\"ird\""] ["id", "organization_id", "b", "i2", "i4", "i8", "n", "f", "f4", "d", "ts", "tz", "j", "jb", "arr", "tarr", "m", "tg", "p", "pr", "t", "vc", "bp", "Odd \"col\"", "bt", "iv", "ip", "nm", "g"]"#
            )
        );
    }

    /// The select-list form gives the same lines as the FROM form (a table of more rows than
    /// fit in a small work_mem, so the result spills to a file), and a LIMIT, a rescan or a
    /// lateral call per organization give what they should.
    #[pg_test]
    fn select_list_and_from_forms_agree() {
        Spi::run(
            "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                 organization_id uuid NOT NULL REFERENCES tenancy.organizations, v text); \
             CREATE TABLE notes (id bigint PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations); \
             SELECT tenancy.register_table('items'); SELECT tenancy.enable_isolation('items'); \
             SELECT tenancy.register_table('notes'); SELECT tenancy.enable_isolation('notes'); \
             SELECT tenancy.create_organization('A', 'a', id => '00000000-0000-0000-0000-0000000000a1'); \
             SELECT tenancy.create_organization('B', 'b', id => '00000000-0000-0000-0000-0000000000b1'); \
             INSERT INTO items (organization_id, v) SELECT '00000000-0000-0000-0000-0000000000a1', 'v' || g \
               FROM generate_series(1, 15000) g; \
             INSERT INTO items (organization_id, v) VALUES ('00000000-0000-0000-0000-0000000000b1', 'of B'); \
             INSERT INTO notes SELECT g, '00000000-0000-0000-0000-0000000000a1' FROM generate_series(1, 2000) g; \
             SET LOCAL work_mem = '64kB'; SET LOCAL maintenance_work_mem = '1MB';",
        )
        .unwrap();
        let a = "'00000000-0000-0000-0000-0000000000a1'::uuid";
        let count = |q: &str| Spi::get_one::<i64>(q).unwrap().unwrap_or(-1);
        let in_select_list = format!("SELECT tenancy.export_organization({a}) AS line");
        let collected = format!("SELECT line FROM tenancy.export_organization({a})");
        assert_eq!(
            count(&format!("SELECT count(*) FROM ({in_select_list}) x")),
            15000 + 2000 + 2,
            "every row, header and end"
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM (({in_select_list} EXCEPT ALL {collected}) UNION ALL ({collected} EXCEPT ALL {in_select_list})) x"
            )),
            0,
            "the same lines either way"
        );
        let end =
            Spi::get_one::<String>(&format!("SELECT line FROM ({in_select_list}) x WHERE line LIKE '{{\"end\"%'"))
                .unwrap();
        assert_eq!(end.as_deref(), Some(r#"{"end" : true, "rows" : {"public.items": 15000, "public.notes": 2000}}"#));
        // Ended early, rescanned, called once per organization.
        assert_eq!(count(&format!("SELECT count(*) FROM ({in_select_list} LIMIT 12500) x")), 12500);
        assert_eq!(
            count(
                "SELECT sum(n)::bigint FROM (SELECT (SELECT count(*) FROM (SELECT tenancy.export_organization(o.id) LIMIT 3) x) n \
                   FROM tenancy.organizations o) y"
            ),
            6
        );
        assert_eq!(
            count(
                "SELECT sum(n)::bigint FROM (SELECT o.id, count(*) n FROM tenancy.organizations o, \
                   LATERAL (SELECT tenancy.export_organization(o.id)) x GROUP BY o.id) y"
            ),
            (15000 + 2000 + 2) + (1 + 2)
        );
    }
}
