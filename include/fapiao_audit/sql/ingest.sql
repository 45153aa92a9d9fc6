-- Normalisation of one delivered file into staged_invoices / rejected_rows.
-- Input: the temp view ing_mapped(__line, <canonical columns as VARCHAR or NULL>).
-- Parameters: $night, $kind, $system, $file.

-- name: macros
-- Full-width ASCII (U+FF01..U+FF5E), the ideographic space and the no-break space become their
-- half-width forms: the part of Unicode NFKC that matters for ids, amounts, dates and names.
-- translate() is costly per row, so it runs only on values holding such a character.
CREATE OR REPLACE TEMP MACRO fa_hw(s) AS
    CASE WHEN regexp_matches(s, '[\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2014}]')
    THEN translate(s,
             '！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～　 ￥—',
             '!"#$%&''()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~  ¥-')
    ELSE s END;

-- name: macro_text
-- Each macro first asks a cheap question (regexp_matches) and rewrites only values that need it:
-- most values are already clean, and regexp_replace costs far more per row.
CREATE OR REPLACE TEMP MACRO fa_text(s) AS
    NULLIF(CASE WHEN regexp_matches(s, '\s\s|^\s|\s$|[\t\n\r\f\v\x{200B}\x{FEFF}]')
                THEN trim(regexp_replace(s, '[\s\x{200B}\x{FEFF}]+', ' ', 'g')) ELSE s END, '');

-- name: macro_id
-- Identifiers: no white space, upper case, Excel text markers (="0123" or '0123) removed.
CREATE OR REPLACE TEMP MACRO fa_id(s) AS
    upper(CASE WHEN regexp_matches(s, '[\s\x{200B}\x{FEFF}''"=]')
               THEN regexp_replace(s, '[\s\x{200B}\x{FEFF}''"=]', '', 'g') ELSE s END);

-- name: macro_amount_text
CREATE OR REPLACE TEMP MACRO fa_amount_text(s) AS
    NULLIF(CASE WHEN regexp_matches(s, '[\s¥\x{200B}\x{FEFF}]')
                THEN regexp_replace(s, '[\s,¥\x{200B}\x{FEFF}]', '', 'g') ELSE replace(s, ',', '') END, '');

-- name: macro_amount
CREATE OR REPLACE TEMP MACRO fa_amount(s) AS
    -- A direct cast to DECIMAL(18, 2) rounds half away from zero to the fen (1234.4999999999998 ->
    -- 1234.50) and reads scientific notation; going through DECIMAL(38, 10) is ~400x slower.
    TRY_CAST(fa_amount_text(s) AS DECIMAL(18, 2));

-- name: macro_rate_t
CREATE OR REPLACE TEMP MACRO fa_rate_t(t) AS CASE
    WHEN t IS NULL OR t = '' OR t IN ('*', '***', '-') THEN NULL
    WHEN t IN ('免税', '不征税', '免征', '零税率') THEN 0::DECIMAL(9, 4)
    WHEN suffix(t, '%') THEN TRY_CAST(round(TRY_CAST(rtrim(t, '%') AS DECIMAL(18, 8)) / 100, 4) AS DECIMAL(9, 4))
    WHEN TRY_CAST(t AS DECIMAL(18, 8)) >= 1 THEN TRY_CAST(round(TRY_CAST(t AS DECIMAL(18, 8)) / 100, 4) AS DECIMAL(9, 4))
    ELSE TRY_CAST(round(COALESCE(TRY_CAST(t AS DECIMAL(18, 8)), TRY_CAST(TRY_CAST(t AS DOUBLE) AS DECIMAL(18, 8))), 4)
                  AS DECIMAL(9, 4))
END;

-- name: macro_rate
CREATE OR REPLACE TEMP MACRO fa_rate(s) AS fa_rate_t(lower(regexp_replace(s, '\s', '', 'g')));

-- name: macro_time_t
CREATE OR REPLACE TEMP MACRO fa_time_t(t) AS CASE
    WHEN t IS NULL OR t = '' THEN NULL
    WHEN regexp_matches(t, '\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$')
        THEN timezone('Asia/Shanghai', TRY_CAST(upper(t) AS TIMESTAMPTZ))
    ELSE COALESCE(TRY_CAST(t AS TIMESTAMP), try_strptime(t, '%Y%m%d'), try_strptime(t, '%Y%m%d%H%M%S'))
END;

-- name: macro_time
-- Dates and times to Asia/Shanghai wall-clock time. Naive values are Beijing time; values with an
-- offset (or Z) are converted. Accepts 2026-11-21, 2026/11/21 14:03, 2026年11月21日, ISO with T.
CREATE OR REPLACE TEMP MACRO fa_time(s) AS fa_time_t(
    trim(replace(replace(replace(replace(replace(fa_text(s), '年', '-'), '月', '-'), '日', ' '), '/', '-'), 'T', ' ')));

-- name: macro_status_t
CREATE OR REPLACE TEMP MACRO fa_status_t(t) AS CASE
    WHEN t IS NULL OR t = '' THEN 'normal'
    WHEN t IN ('正常', 'normal', '有效', '正常发票') THEN 'normal'
    WHEN t IN ('作废', '已作废', 'voided', 'void', '作废发票') THEN 'voided'
    WHEN t IN ('红冲', '已红冲', '全额红冲', '全部红冲', 'redreversed', '已全额红冲') THEN 'red_reversed'
    WHEN t IN ('部分红冲', '已部分红冲', 'partlyredreversed', 'partiallyredreversed') THEN 'partly_red_reversed'
    WHEN t IN ('失控', '失控发票', 'outofcontrol') THEN 'out_of_control'
    WHEN t IN ('异常', '异常发票', 'abnormal') THEN 'abnormal'
    ELSE t
END;

-- name: macro_status
CREATE OR REPLACE TEMP MACRO fa_status(s) AS fa_status_t(lower(regexp_replace(s, '[\s_\-]', '', 'g')));

-- name: macro_type_t
-- Free-text invoice kinds to medium (digital / electronic / paper) x kind (special / normal).
CREATE OR REPLACE TEMP MACRO fa_type_t(t) AS CASE
    WHEN t IS NULL OR t = '' THEN NULL
    WHEN t IN ('digital_special', 'digital_normal', 'electronic_special', 'electronic_normal',
               'paper_special', 'paper_normal') THEN t
    WHEN NOT regexp_matches(t, '数电|全电|电子|纸|专用|普通|专票|普票|digital|electronic|paper|special|normal') THEN t
    ELSE (CASE WHEN regexp_matches(t, '数电|全电|digital') THEN 'digital'
               WHEN regexp_matches(t, '电子|electronic') THEN 'electronic'
               ELSE 'paper' END)
         || '_' ||
         (CASE WHEN regexp_matches(t, '专用|专票|special') THEN 'special' ELSE 'normal' END)
END;

-- name: macro_type
CREATE OR REPLACE TEMP MACRO fa_type(s) AS fa_type_t(lower(regexp_replace(s, '\s', '', 'g')));

-- name: normalize
CREATE OR REPLACE TEMP TABLE ing_norm AS
WITH h0 AS MATERIALIZED (
    SELECT *, regexp_matches(concat_ws('|', invoice_code, invoice_number, issue_time, seller_tax_id,
                                       seller_name, buyer_tax_id, buyer_name, amount, tax_amount,
                                       total_amount, is_positive, original_invoice_number, remark, first_cell),
                             '[\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2014}]') AS needs_hw
    FROM ing_mapped
),
h AS MATERIALIZED (
    -- Half-width once per row that needs it; the fa_* macros below expect half-width input.
    SELECT __line,
           CASE WHEN needs_hw THEN fa_hw(invoice_code) ELSE invoice_code END AS invoice_code,
           CASE WHEN needs_hw THEN fa_hw(invoice_number) ELSE invoice_number END AS invoice_number,
           invoice_type,
           CASE WHEN needs_hw THEN fa_hw(issue_time) ELSE issue_time END AS issue_time,
           CASE WHEN needs_hw THEN fa_hw(seller_tax_id) ELSE seller_tax_id END AS seller_tax_id,
           CASE WHEN needs_hw THEN fa_hw(seller_name) ELSE seller_name END AS seller_name,
           CASE WHEN needs_hw THEN fa_hw(buyer_tax_id) ELSE buyer_tax_id END AS buyer_tax_id,
           CASE WHEN needs_hw THEN fa_hw(buyer_name) ELSE buyer_name END AS buyer_name,
           CASE WHEN needs_hw THEN fa_hw(amount) ELSE amount END AS amount,
           CASE WHEN needs_hw THEN fa_hw(tax_amount) ELSE tax_amount END AS tax_amount,
           tax_rate,
           CASE WHEN needs_hw THEN fa_hw(total_amount) ELSE total_amount END AS total_amount,
           status,
           CASE WHEN needs_hw THEN fa_hw(is_positive) ELSE is_positive END AS is_positive,
           CASE WHEN needs_hw THEN fa_hw(original_invoice_number) ELSE original_invoice_number END
               AS original_invoice_number,
           CASE WHEN needs_hw THEN fa_hw(remark) ELSE remark END AS remark,
           CASE WHEN needs_hw THEN fa_hw(first_cell) ELSE first_cell END AS first_cell
    FROM h0
),
-- Low-cardinality columns are mapped once per distinct value, then joined back.
type_map AS MATERIALIZED (
    SELECT k, fa_text(fa_hw(k)) AS raw, fa_type(fa_hw(k)) AS v FROM (SELECT DISTINCT invoice_type AS k FROM h)
),
status_map AS MATERIALIZED (
    SELECT k, fa_status(fa_hw(k)) AS v FROM (SELECT DISTINCT status AS k FROM h)
),
rate_map AS MATERIALIZED (
    SELECT k, fa_rate(fa_hw(k)) AS v FROM (SELECT DISTINCT tax_rate AS k FROM h)
),
p AS MATERIALIZED (
    SELECT
        __line,
        fa_id(invoice_code)                               AS invoice_code,
        fa_id(invoice_number)                             AS invoice_number,
        tm.raw                                            AS invoice_type_raw,
        tm.v                                              AS invoice_type,
        issue_time                                        AS issue_time_text,
        fa_time(issue_time)                               AS issue_time,
        fa_id(seller_tax_id)                              AS seller_tax_id,
        fa_text(seller_name)                              AS seller_name,
        CASE WHEN buyer_tax_id IS NULL THEN NULL ELSE coalesce(fa_id(buyer_tax_id), '') END AS buyer_tax_id,
        CASE WHEN buyer_name IS NULL THEN NULL ELSE coalesce(fa_text(buyer_name), '') END AS buyer_name,
        amount                                            AS amount_text,
        fa_amount(amount)                                 AS amount,
        tax_amount                                        AS tax_amount_text,
        fa_amount(tax_amount)                             AS tax_amount,
        rm.v                                              AS tax_rate,
        total_amount                                      AS total_amount_text,
        fa_amount(total_amount)                           AS total_amount,
        sm.v                                              AS status,
        lower(fa_id(is_positive))                         AS is_positive,
        fa_id(original_invoice_number)                    AS original_invoice_number,
        fa_text(remark)                                   AS remark,
        list_contains(['合计', '总计', '小计', '合 计'], fa_text(first_cell)) AS totals_row
    FROM h
    LEFT JOIN type_map tm ON tm.k IS NOT DISTINCT FROM h.invoice_type
    LEFT JOIN status_map sm ON sm.k IS NOT DISTINCT FROM h.status
    LEFT JOIN rate_map rm ON rm.k IS NOT DISTINCT FROM h.tax_rate
)
SELECT
    __line,
    NULLIF(invoice_code, '') AS invoice_code,
    NULLIF(invoice_number, '') AS invoice_number,
    CASE WHEN regexp_full_match(invoice_number, '\d{20}') THEN invoice_number
         ELSE coalesce(invoice_code, '') || '-' || invoice_number END AS invoice_key,
    invoice_type, invoice_type_raw,
    issue_time, issue_time::DATE AS issue_date,
    NULLIF(seller_tax_id, '') AS seller_tax_id, seller_name, buyer_tax_id, buyer_name,
    amount, tax_amount, tax_rate, total_amount, status,
    (amount < 0 OR coalesce(total_amount < 0, false) OR coalesce(is_positive IN ('否', 'n', 'no', 'false', '0'), false)) AS is_red,
    CASE
        WHEN regexp_full_match(original_invoice_number, '\d{20}') THEN original_invoice_number
        WHEN regexp_full_match(original_invoice_number, '\d{10,12}[-:/]\d{8}')
            THEN regexp_replace(original_invoice_number, '[:/]', '-')
        WHEN regexp_matches(remark, '被红冲蓝字数电(发)?票号码[:]?\s*\d{20}')
            THEN regexp_extract(remark, '被红冲蓝字数电(发)?票号码[:]?\s*(\d{20})', 2)
        WHEN regexp_matches(remark, '对应正数发票代码[:]?\s*\d{10,12}\s*号码[:]?\s*\d{8}')
            THEN regexp_extract(remark, '对应正数发票代码[:]?\s*(\d{10,12})', 1) || '-'
                 || regexp_extract(remark, '对应正数发票代码[:]?\s*\d{10,12}\s*号码[:]?\s*(\d{8})', 1)
        WHEN regexp_full_match(original_invoice_number, '\d{8}') AND invoice_code IS NOT NULL
            THEN invoice_code || '-' || original_invoice_number
        ELSE NULLIF(original_invoice_number, '')
    END AS original_invoice_key,
    remark,
    CASE
        WHEN totals_row THEN '合计 totals row: not an invoice'
        WHEN invoice_number IS NULL OR invoice_number = '' THEN 'missing invoice number'
        WHEN fa_text(issue_time_text) IS NULL THEN 'missing issue time'
        WHEN issue_time IS NULL THEN 'unparseable issue time: ' || left(issue_time_text, 60)
        WHEN seller_tax_id = '' THEN 'missing seller tax id'
        WHEN fa_amount_text(amount_text) IS NULL THEN 'missing amount'
        WHEN amount IS NULL THEN 'unparseable amount: ' || left(amount_text, 60)
        WHEN tax_amount IS NULL AND fa_amount_text(tax_amount_text) IS NOT NULL
            THEN 'unparseable tax_amount: ' || left(tax_amount_text, 60)
        WHEN total_amount IS NULL AND fa_amount_text(total_amount_text) IS NOT NULL
            THEN 'unparseable total_amount: ' || left(total_amount_text, 60)
    END AS reason
FROM p;

-- name: insert_staged
INSERT INTO ing_staged
SELECT $night, $kind, $system, $file, __line,
       invoice_key, coalesce(invoice_code, ''), invoice_number, invoice_type, invoice_type_raw,
       issue_time, issue_date, seller_tax_id, seller_name, buyer_tax_id, buyer_name,
       amount, tax_amount, tax_rate, total_amount, status, is_red, original_invoice_key, remark
FROM ing_norm
WHERE reason IS NULL;

-- name: insert_rejected
INSERT INTO ing_rejected
SELECT $night, $system, $file, n.__line, left(m.__raw, 2000), n.reason
FROM ing_norm n JOIN ing_mapped m USING (__line)
WHERE n.reason IS NOT NULL;

-- name: counts
SELECT count(*) AS rows_read, count(*) FILTER (WHERE reason IS NULL) AS rows_loaded
FROM ing_norm;
