-- Persistent tables of the fapiao-audit DuckDB database.
-- Every table is partitioned by the business night; a night's rows are replaced in one transaction.

CREATE TABLE IF NOT EXISTS ingested_files (
    night          DATE    NOT NULL,
    source_kind    VARCHAR NOT NULL,      -- 'issuer' | 'registry'
    source_system  VARCHAR NOT NULL,      -- issuing system's folder name, or 'registry'
    file           VARCHAR NOT NULL,      -- path relative to <landing>/<night>/
    sha256         VARCHAR NOT NULL,
    format         VARCHAR NOT NULL,      -- csv | xlsx | parquet | jsonl
    encoding       VARCHAR,               -- csv only: utf-8 | utf-8-sig | gb18030
    bytes          BIGINT  NOT NULL,
    rows_read      BIGINT  NOT NULL,
    rows_loaded    BIGINT  NOT NULL,
    rows_rejected  BIGINT  NOT NULL,
    duplicate_of   VARCHAR,               -- same bytes delivered before under this name: not loaded again
    rows_skipped   BIGINT  DEFAULT 0      -- rows that are no invoice (a 合计 totals row); read = loaded + rejected + skipped
);

-- Staged invoices are stored as versions: a record (one invoice of one source, as normalised) is written
-- once, the first night it arrives with these values; each night's snapshot is a narrow list of the
-- versions it holds, where (invoice_seen). staged_invoices (a view, below) is tonight's snapshot as a
-- table of the same columns as ever: reconciliation, expectations and reports read it unchanged.
-- row_hash: hash() of the record's values, asked together with source and key (include/fapiao_audit/versions.py).
CREATE TABLE IF NOT EXISTS invoice_versions (
    version_id              BIGINT  NOT NULL,
    source_kind             VARCHAR NOT NULL,
    source_system           VARCHAR NOT NULL,
    row_hash                UBIGINT NOT NULL,
    first_night             DATE    NOT NULL,   -- the night that first staged it (informative)
    invoice_key             VARCHAR,            -- 20-digit number, or '<code>-<number>' for legacy invoices
    invoice_code            VARCHAR,            -- '' for 数电票
    invoice_number          VARCHAR,
    invoice_type            VARCHAR,            -- digital_special | digital_normal | electronic_special | ...
    invoice_type_raw        VARCHAR,
    issue_time              TIMESTAMP,          -- Asia/Shanghai wall-clock time
    issue_date              DATE,               -- Asia/Shanghai date
    seller_tax_id           VARCHAR,
    seller_name             VARCHAR,
    buyer_tax_id            VARCHAR,
    buyer_name              VARCHAR,
    amount                  DECIMAL(18, 2),
    tax_amount              DECIMAL(18, 2),
    tax_rate                DECIMAL(9, 4),      -- 0.1300 for 13 %
    total_amount            DECIMAL(18, 2),
    status                  VARCHAR,            -- normal | voided | red_reversed | partly_red_reversed | out_of_control | abnormal
    is_red                  BOOLEAN,
    original_invoice_key    VARCHAR,            -- red invoices: the blue invoice's key
    remark                  VARCHAR,
    risk_level              VARCHAR,            -- registry: none | suspicious | abnormal_voucher | out_of_control | other text
    lines                   INTEGER,            -- invoices with lines (staged_lines): how many; NULL without lines
    lines_amount            DECIMAL(18, 2),     -- the lines' sums (a 详见销货清单 summary line not counted twice)
    lines_tax               DECIMAL(18, 2),
    line_rate_gap           DECIMAL(38, 6),     -- the largest |amount x rate - tax| of one line
    line_problem            VARCHAR,            -- line files: header fields the lines of one invoice disagree on
    upload_status           VARCHAR,            -- issuers: uploaded | not_uploaded | uploading | failed | signature_failed | other text
    source_document         VARCHAR             -- issuers: the system's own document number (单据编号), evidence only
);

-- The parts of a night's snapshots: one row per night, source, file and sheet staged.
CREATE TABLE IF NOT EXISTS staged_parts (
    part_id        INTEGER NOT NULL,
    night          DATE    NOT NULL,
    source_kind    VARCHAR NOT NULL,
    source_system  VARCHAR NOT NULL,
    file           VARCHAR NOT NULL,
    sheet          VARCHAR             -- workbooks: the sheet the rows were read from
);

-- A night's snapshot: one narrow row per staged row, in which part and line it was read and which
-- version it holds (narrow, so that joining it to its versions holds little in memory).
CREATE TABLE IF NOT EXISTS invoice_seen (
    night          DATE    NOT NULL,
    part_id        INTEGER NOT NULL,
    line           BIGINT  NOT NULL,   -- 1-based line in the file (header is line 1 for csv/xlsx)
    version_id     BIGINT  NOT NULL,
    line_rate_line BIGINT              -- invoices with lines: the file line of the line with the largest rate gap
);

-- One row per invoice line (the registry's 信息汇总表, or an issuer's line file), stored the same way.
CREATE TABLE IF NOT EXISTS line_versions (
    version_id      BIGINT  NOT NULL,
    source_kind     VARCHAR NOT NULL,
    source_system   VARCHAR NOT NULL,
    row_hash        UBIGINT NOT NULL,
    first_night     DATE    NOT NULL,
    invoice_key     VARCHAR NOT NULL,
    item_name       VARCHAR,            -- 货物或应税劳务名称 / 项目名称 / 商品名称
    tax_code        VARCHAR,            -- 税收分类编码
    spec            VARCHAR,            -- 规格型号
    unit            VARCHAR,
    quantity        VARCHAR,            -- as delivered (exports write long decimals as text)
    unit_price      VARCHAR,
    amount          DECIMAL(18, 2),
    tax_rate        DECIMAL(9, 4),
    tax_amount      DECIMAL(18, 2),
    total_amount    DECIMAL(18, 2),
    is_summary      BOOLEAN             -- a (详见销货清单) line standing for detail lines of the same invoice
);

CREATE TABLE IF NOT EXISTS line_seen (
    night          DATE    NOT NULL,
    part_id        INTEGER NOT NULL,
    line           BIGINT  NOT NULL,
    version_id     BIGINT  NOT NULL
);

-- Each night's snapshots, with the columns (and their order) staged_invoices and staged_lines always had.
CREATE OR REPLACE VIEW staged_invoices AS
SELECT s.night, p.source_kind, p.source_system, p.file, s.line,
       v.invoice_key, v.invoice_code, v.invoice_number, v.invoice_type, v.invoice_type_raw, v.issue_time,
       v.issue_date, v.seller_tax_id, v.seller_name, v.buyer_tax_id, v.buyer_name, v.amount, v.tax_amount,
       v.tax_rate, v.total_amount, v.status, v.is_red, v.original_invoice_key, v.remark, p.sheet, v.risk_level,
       v.lines, v.lines_amount, v.lines_tax, v.line_rate_gap, s.line_rate_line,
       v.line_problem, v.upload_status, v.source_document
FROM invoice_seen s
JOIN staged_parts p ON p.part_id = s.part_id
JOIN invoice_versions v ON v.version_id = s.version_id;

CREATE OR REPLACE VIEW staged_lines AS
SELECT s.night, p.source_kind, p.source_system, p.file, p.sheet, s.line,
       v.invoice_key, v.item_name, v.tax_code, v.spec, v.unit, v.quantity, v.unit_price, v.amount, v.tax_rate,
       v.tax_amount, v.total_amount, v.is_summary
FROM line_seen s
JOIN staged_parts p ON p.part_id = s.part_id
JOIN line_versions v ON v.version_id = s.version_id;

CREATE TABLE IF NOT EXISTS rejected_rows (
    night          DATE    NOT NULL,
    source_system  VARCHAR NOT NULL,
    file           VARCHAR NOT NULL,
    line           BIGINT,
    raw            VARCHAR,
    reason         VARCHAR NOT NULL,
    sheet          VARCHAR,
    skipped        BOOLEAN DEFAULT false  -- not an invoice (a totals row): counted as skipped, not rejected
);

CREATE TABLE IF NOT EXISTS findings (
    night            DATE    NOT NULL,
    category         VARCHAR NOT NULL,
    invoice_key      VARCHAR,
    invoice_code     VARCHAR,
    invoice_number   VARCHAR,
    field            VARCHAR,
    source_system    VARCHAR,
    issuer_value     VARCHAR,
    registry_value   VARCHAR,
    seller_tax_id    VARCHAR,
    issue_date       DATE,
    detail           VARCHAR,
    suggested_match  VARCHAR,
    finding_status   VARCHAR,     -- new | open (relative to the previous published night)
    first_seen       DATE,
    age_days         INTEGER,
    cause            VARCHAR,     -- MISSING_IN_REGISTRY / PENDING_SYNC: why (model.MISSING_CAUSES)
    finding_id       VARCHAR,     -- stable across nights: category family, key, field, source
    case_id          VARCHAR,     -- findings that are one problem share it
    issuer_total     DECIMAL(18, 2),  -- the invoice's 价税合计 on the issuer side
    registry_total   DECIMAL(18, 2),  -- ... and in the registry
    amount_at_risk   DECIMAL(18, 2),  -- the larger absolute value of the two
    decision         VARCHAR,     -- finance's decision in force (model.DECISIONS), or 'reopened'
    decision_note    VARCHAR,
    decided_by       VARCHAR,
    decided_on       DATE,
    action           VARCHAR,     -- the recommended action (model.ACTIONS), Chinese / English
    owner_role       VARCHAR      -- who usually takes it (model.ROLES)
);

-- Finance's decisions, as read from the acknowledgements folder: one row per decided finding and file.
CREATE TABLE IF NOT EXISTS decisions (
    finding_id     VARCHAR NOT NULL,
    decision       VARCHAR NOT NULL,  -- model.DECISIONS
    note           VARCHAR,
    decided_by     VARCHAR NOT NULL,  -- the file's owner column, else the file's name
    read_night     DATE    NOT NULL,  -- the night whose run read the file: in force from that night on
    values_hash    VARCHAR,           -- the finding's values when decided; other values re-open it
    file           VARCHAR NOT NULL,
    sheet          VARCHAR,
    row_number     BIGINT  NOT NULL,
    file_sha256    VARCHAR NOT NULL,
    read_at        TIMESTAMPTZ NOT NULL
);

-- Every decision file read (once per checksum), and the lines of it that could not be taken.
CREATE TABLE IF NOT EXISTS decision_files (
    file_sha256    VARCHAR NOT NULL,
    file           VARCHAR NOT NULL,
    read_night     DATE    NOT NULL,
    decisions      BIGINT  NOT NULL,
    problems       BIGINT  NOT NULL,
    read_at        TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS decision_problems (
    file_sha256    VARCHAR NOT NULL,
    file           VARCHAR NOT NULL,
    read_night     DATE    NOT NULL,
    sheet          VARCHAR,
    row_number     BIGINT,
    reason         VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    night         DATE      NOT NULL,
    run_id        VARCHAR   NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    outcome       VARCHAR,    -- passed | failed (expectations)
    published     BOOLEAN   NOT NULL DEFAULT false,
    counts        JSON
);

-- The blue originals of nights whose staged rows retention removed (storage.sweep): one row per key, the
-- record orphan_red_invoices would take (the latest night; the registry's before an issuer's). A red
-- invoice's original is looked for here too. It grows by the blue invoices first issued each night.
CREATE TABLE IF NOT EXISTS retired_blues (
    invoice_key    VARCHAR NOT NULL,
    source_kind    VARCHAR NOT NULL,
    source_system  VARCHAR NOT NULL,
    night          DATE    NOT NULL,
    total_amount   DECIMAL(18, 2)
);

-- Results handed from one stage to the next (Airflow runs stages in separate processes).
CREATE TABLE IF NOT EXISTS run_state (
    night    DATE    NOT NULL,
    stage    VARCHAR NOT NULL,   -- reconcile | validate
    payload  JSON    NOT NULL
);

-- Databases written before these columns existed get them (appended, in the same order as above).
ALTER TABLE ingested_files ADD COLUMN IF NOT EXISTS rows_skipped BIGINT DEFAULT 0;
ALTER TABLE rejected_rows ADD COLUMN IF NOT EXISTS sheet VARCHAR;
ALTER TABLE rejected_rows ADD COLUMN IF NOT EXISTS skipped BOOLEAN DEFAULT false;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS cause VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS finding_id VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS case_id VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS issuer_total DECIMAL(18, 2);
ALTER TABLE findings ADD COLUMN IF NOT EXISTS registry_total DECIMAL(18, 2);
ALTER TABLE findings ADD COLUMN IF NOT EXISTS amount_at_risk DECIMAL(18, 2);
ALTER TABLE findings ADD COLUMN IF NOT EXISTS decision VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS decision_note VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS decided_by VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS decided_on DATE;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS action VARCHAR;
ALTER TABLE findings ADD COLUMN IF NOT EXISTS owner_role VARCHAR;

-- Open items no longer reconciled: a finding whose invoice left the window (or whose system did not
-- deliver) stays open, night after night, until it is found resolved in the window or finance closes it.
-- An item's values are stored once (carried_items, the columns of a finding that do not change while it
-- is carried); each night it is carried adds one narrow row (carried_nights: why, and the decision in
-- force). The view carried_findings gives one row per night and item (carried.py).
CREATE TABLE IF NOT EXISTS carried_items AS
SELECT NULL::BIGINT AS item,
       * EXCLUDE (night, finding_status, age_days, decision, decision_note, decided_by, decided_on),
       NULL::DATE AS last_found  -- the last night that found it
FROM findings WHERE false;

CREATE TABLE IF NOT EXISTS carried_nights (
    night          DATE    NOT NULL,
    item           BIGINT  NOT NULL,  -- carried_items.item
    carried_as     VARCHAR NOT NULL,  -- model.CARRIED_STATUSES; also the item's finding_status that night
    decision       VARCHAR,
    decision_note  VARCHAR,
    decided_by     VARCHAR,
    decided_on     DATE
);

-- One row per night and carried item: the columns of a finding (age counted from first_seen to the
-- night), then why it is carried and the last night that found it.
CREATE OR REPLACE VIEW carried_findings AS
SELECT n.night, i.category, i.invoice_key, i.invoice_code, i.invoice_number, i.field, i.source_system,
       i.issuer_value, i.registry_value, i.seller_tax_id, i.issue_date, i.detail, i.suggested_match,
       n.carried_as AS finding_status, i.first_seen, (n.night - i.first_seen)::INTEGER AS age_days, i.cause,
       i.finding_id, i.case_id, i.issuer_total, i.registry_total, i.amount_at_risk, n.decision,
       n.decision_note, n.decided_by, n.decided_on, i.action, i.owner_role, n.carried_as, i.last_found
FROM carried_nights n
JOIN carried_items i ON i.item = n.item;
