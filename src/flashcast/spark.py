"""Apache Spark as the engine of the governed data path (`[engine] name = "spark"`).

The transforms are the DuckDB-dialect SQL the default engine runs (`flashcast.stages.ingest`,
`guard`, `kpis`), transpiled by SQLGlot to Spark SQL, with the few rewrites SQLGlot does not make
itself (see `_rewrite`); there is no second hand-written copy. Only reading the export files is
Spark's own: each NDJSON line (or Parquet row, as JSON) becomes a row with its file and line, parsed
with `from_json` into the same columns DuckDB's reader gives, then checked by the shared SQL.

Results the rest of the pipeline needs are landed in the run's DuckDB connection through Arrow.
PySpark and SQLGlot come with the `spark` extra; Spark needs Java 17 or 21.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from flashcast.errors import ConfigError
from flashcast.sql import literal

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from flashcast.config import SparkConfig
    from flashcast.records import ExportFile


def to_spark(sql: str) -> str:
    """DuckDB-dialect SQL as Spark SQL."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    # try(x) is NULL where x fails: only url_decode is tried in the shared SQL, and Spark's own
    # try_url_decode does that (two passes: a node put in place is not visited again)
    tree = tree.transform(lambda node: node.this if isinstance(node, exp.Try) else node)
    return tree.transform(_rewrite).sql(dialect="spark")


# strftime codes used by the shared SQL, as Spark datetime patterns
_DATE_FORMATS = {"%Y%m%d": "yyyyMMdd", "%Y-%m-%d": "yyyy-MM-dd"}


def _rewrite(node: exp.Expression) -> exp.Expression:
    """What SQLGlot leaves in DuckDB's terms, in Spark's."""
    if isinstance(node, exp.Anonymous):
        # a node put in place is not visited again: its arguments are rewritten here
        name, args = node.name.lower(), [a.transform(_rewrite) for a in node.expressions]
        if name == "url_decode":  # Java's decoder turns '+' into a space, DuckDB's keeps it
            plus = exp.Anonymous(this="replace", expressions=[args[0], exp.Literal.string("+"),
                                                                exp.Literal.string("%2B")])
            return exp.Anonymous(this="try_url_decode", expressions=[plus])
        if name == "hash":  # DuckDB's hash is 64-bit; Spark's `hash` is 32-bit (collides at a million rows)
            return exp.Anonymous(this="xxhash64", expressions=args)
        if name == "list_extract":  # NULL past the end, as in DuckDB
            return exp.Anonymous(this="try_element_at", expressions=args)
        if name == "list_position":
            return exp.Anonymous(this="array_position", expressions=args)
        if name == "list_sum":  # wraps around past 2^63 (ANSI mode is off): a sum all the same
            total = sqlglot.parse_one("aggregate(x, 0L, (total, v) -> total + v)", read="spark")
            assert isinstance(total, exp.Reduce)
            total.this.replace(args[0])
            return total
        if name == "try_strptime":
            fmt = _DATE_FORMATS[args[1].name]
            return exp.Anonymous(this="try_to_timestamp", expressions=[args[0], exp.Literal.string(fmt)])
    if isinstance(node, exp.RegexpFullMatch):
        return exp.RegexpLike(this=node.this, expression=exp.Literal.string(f"^(?:{node.expression.name})$"))
    if isinstance(node, exp.RegexpReplace):
        replacement = node.args.get("replacement")
        if isinstance(replacement, exp.Literal):  # Java writes a group reference $1, RE2 \1
            node.set("replacement", exp.Literal.string(re.sub(r"\\(\d)", r"$\1", replacement.name)))
        node.set("modifiers", None)  # Spark replaces every match
    if isinstance(node, exp.UnixToTime):  # make_timestamp(micros): a timestamp without time zone
        return exp.Cast(this=exp.Anonymous(this="timestamp_micros", expressions=[node.this]),
                        to=exp.DataType.build("TIMESTAMP_NTZ", dialect="spark"))
    return node


_SPARK_TYPES = {"VARCHAR": "string", "BIGINT": "bigint", "INT": "int", "INTEGER": "int", "BLOB": "binary",
                "DATE": "date", "BOOLEAN": "boolean", "DOUBLE": "double"}


class SparkEngine:
    """Runs the shared SQL on a Spark session; each step is cached (materialized at once, so a
    failing step is named where it fails)."""

    name = "spark"

    def __init__(self, session: SparkSession) -> None:
        self.spark = session
        self._cached: dict[str, Any] = {}
        self.timings: dict[str, float] = {}  # seconds per step
        self._counts: dict[str, int] = {}

    def create(self, table: str, select: str, *, native: bool = False) -> None:
        """`native`: `select` is Spark SQL already."""
        started = time.perf_counter()
        frame = self.spark.sql(select if native else to_spark(select)).cache()
        self._counts[str(table)] = frame.count()
        self.timings[str(table)] = time.perf_counter() - started
        old = self._cached.pop(table, None)
        frame.createOrReplaceTempView(table)
        if old is not None:
            old.unpersist()
        self._cached[table] = frame

    def view(self, name: str, select: str) -> None:
        self.create(name, select)  # cached: Spark would recompute a plain view for every reader

    def rows(self, select: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.spark.sql(to_spark(select)).collect()]

    def put(self, table: str, columns: dict[str, str], rows: list[tuple[Any, ...]]) -> None:
        schema = ", ".join(f"{name} {_SPARK_TYPES[kind.upper()]}" for name, kind in columns.items())
        self.spark.createDataFrame([tuple(bytearray(v) if isinstance(v, bytes) else v for v in r) for r in rows],
                                   schema=schema).createOrReplaceTempView(table)

    def arrow(self, table: str) -> pa.Table:
        return self.spark.table(table).toArrow()

    def load(self, table: str, data: pa.Table) -> None:
        self.spark.createDataFrame(data).createOrReplaceTempView(table)

    def register_lines(self, files: Sequence[ExportFile], view: str) -> None:
        """Every NDJSON line (and every Parquet row, as JSON text) of `files` as view `view`:
        source_file, file_date, intraday, source_line, line."""
        from pyspark.sql import functions as F

        from flashcast.stages.ingest import DAY_FOLDER_PATTERN, day_folder  # the stage owns the export's layout

        # A file is known by its name and its day folder's ("" outside one): shards of different days
        # share names (000000000000.json). The folder is taken from the path, a URI; a day folder's
        # name (events_YYYYMMDD) has no character a URI would escape.
        folder = F.regexp_extract(F.col("_metadata.file_path"), "/([^/]+)/[^/]+$", 1)
        in_day_folder = folder.rlike(f"(?i)^{DAY_FOLDER_PATTERN}$")
        file_key = [F.col("_metadata.file_name").alias("file_name"),
                    F.when(in_day_folder, folder).otherwise(F.lit("")).alias("day_folder")]
        parts = []
        ndjson = [f for f in files if f.format == "ndjson"]
        parquet = [f for f in files if f.format == "parquet"]
        if ndjson:
            # Lines end at \n, a CR before it dropped, as DuckDB's line reader reads them (which also
            # ends a line at a bare CR, a byte no GA4 export holds outside its line ends); a file is
            # read in blocks, each block's rows in order, so (block start, row id) orders its lines.
            text = self.spark.read.option("lineSep", "\n").text([str(f.path) for f in ndjson])
            line = F.when(F.col("value").endswith("\r"), F.expr("substring(value, 1, length(value) - 1)")
                          ).otherwise(F.col("value"))
            parts.append(text.select(*file_key,
                                     F.col("_metadata.file_block_start").alias("block"),
                                     F.monotonically_increasing_id().alias("row_id"), line.alias("line")))
        # Spark merges the schemas of the files it reads together only where their types agree: files
        # whose columns are typed differently (an id as a number in one, as text in another) are read
        # in groups of one schema each; their rows meet as JSON text.
        for group in _by_schema(parquet):
            rows = self.spark.read.option("mergeSchema", "true").parquet(*[str(f.path) for f in group])
            present = [_parquet_column(rows, c) for c in rows.columns if c in _GA4_FIELDS]
            parts.append(rows.select(*file_key,
                                     F.lit(0).cast("long").alias("block"), F.col("_metadata.row_index").alias("row_id"),
                                     F.to_json(F.struct(*present)).alias("line")))
        meta = self.spark.createDataFrame(
            [(f.path.name, f.path.parent.name if day_folder(f.path.parent) else "", f.name, f.file_date, f.intraday)
             for f in files],
            schema="file_name string, day_folder string, source_file string, file_date date, intraday boolean")
        lines = parts[0]
        for part in parts[1:]:
            lines = lines.unionByName(part)
        lines.join(F.broadcast(meta), ["file_name", "day_folder"]).createOrReplaceTempView("_spark_raw_lines")
        self.spark.sql("""SELECT source_file, file_date, intraday,
            row_number() OVER (PARTITION BY source_file ORDER BY block, row_id) AS source_line, line
            FROM _spark_raw_lines""").createOrReplaceTempView("_spark_lines")
        self.create(view, self.parsed_sql("_spark_lines"), native=True)

    def parsed_sql(self, lines: str) -> str:
        """The lines as the columns the shared checks read (what DuckDB's line reader gives), in
        Spark SQL: blank, is_json, top_type, the GA4 fields and the JSON type of event_params."""
        fields = ", ".join(f"j.{k} AS {k}" for k in _GA4_FIELDS)
        # a JSON scalar (DuckDB calls such a line JSON, but not an object); no backslashes: Spark
        # SQL literals read them as escapes
        scalar = "^[ \t\r]*(-?[0-9][0-9.eE+-]*|\"[^\"]*\"|true|false|null)[ \t\r]*$"
        return f"""SELECT source_file, file_date, intraday, source_line, line, blank, is_json, top_type, {fields},
            array(CASE WHEN top_type <> 'OBJECT' THEN NULL
                       WHEN get_json_object(line, '$.event_params') IS NULL THEN NULL
                       WHEN startswith(ltrim(get_json_object(line, '$.event_params')), '[') THEN 'ARRAY'
                       ELSE 'OTHER' END) AS types
          FROM (
            SELECT *, CASE WHEN top_type = 'OBJECT' THEN from_json(line, {literal(_SCHEMA)}) END AS j FROM (
              SELECT *, top_type IS NOT NULL AS is_json FROM (
                SELECT *, line IS NULL OR trim(line) = '' AS blank,
                  CASE WHEN json_object_keys(line) IS NOT NULL THEN 'OBJECT'
                       WHEN json_array_length(line) IS NOT NULL THEN 'ARRAY'
                       WHEN line RLIKE {literal(scalar)} THEN 'SCALAR' END AS top_type
                FROM {lines})))"""

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def stop(self) -> None:
        for frame in self._cached.values():
            frame.unpersist()
        self._cached.clear()


def _by_schema(files: Sequence[ExportFile]) -> list[list[ExportFile]]:
    """Parquet files grouped by their schema (read from each file's footer), in order of first sight."""
    import pyarrow.parquet as pq

    groups: dict[str, list[ExportFile]] = {}
    for file in files:
        groups.setdefault(str(pq.read_schema(file.path).remove_metadata()), []).append(file)
    return list(groups.values())


def _parquet_column(rows: Any, name: str) -> Any:
    """A Parquet column as GA4 writes it: a day stored as a date becomes YYYYMMDD text and a time
    stored as a timestamp microseconds since the epoch (as DuckDB's reader does, `_parquet_field`
    in `flashcast.stages.ingest`; the session's time zone is UTC, so a timestamp without one is UTC)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    stored = rows.schema[name].dataType
    if name == "event_date" and isinstance(stored, DateType):
        return F.date_format(F.col(name), "yyyyMMdd").alias(name)
    if name == "event_timestamp" and isinstance(stored, TimestampType | TimestampNTZType):
        return F.unix_micros(F.col(name).cast("timestamp")).alias(name)
    return F.col(name)


def _spark_type(structure: object) -> str:
    """`flashcast.stages.ingest.GA4_JSON_STRUCTURE` notation as a Spark DDL type."""
    if isinstance(structure, str):
        return _SPARK_TYPES[structure]
    if isinstance(structure, list):
        return f"array<{_spark_type(structure[0])}>"
    assert isinstance(structure, dict)
    return "struct<" + ", ".join(f"{k}: {_spark_type(v)}" for k, v in structure.items()) + ">"


def _structure() -> Mapping[str, object]:
    from flashcast.stages.ingest import GA4_JSON_STRUCTURE  # the stage owns the GA4 fields

    return GA4_JSON_STRUCTURE


_GA4_FIELDS = tuple(_structure())
_SCHEMA = ", ".join(f"{k} {_spark_type(v)}" for k, v in _structure().items())


_DRIVER_LOG = Path(__file__).with_name("spark-log4j2.properties").as_uri()


@contextmanager
def spark_session(config: SparkConfig, *, scratch: Path) -> Iterator[SparkEngine]:
    """A Spark session from the config (master, extra settings), stopped afterwards."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("engine 'spark' needs PySpark: pip install 'flashcast[spark]'") from exc
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ConfigError("engine 'spark' needs Java 17 or 21 (set JAVA_HOME or put java on PATH)")
    scratch.mkdir(parents=True, exist_ok=True)
    builder = (SparkSession.builder.master(config.master).appName("flashcast")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.ansi.enabled", "false")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
               # The governed tables come back to the driver (Arrow) to reach the warehouse: Spark's
               # 1g driver defaults lost a year of events (357k rows) there. `conf` overrides both.
               .config("spark.driver.memory", "4g")
               .config("spark.driver.maxResultSize", "4g"))
    if "spark.driver.extraJavaOptions" not in config.conf:  # the user's own JVM options win, logging included
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_DRIVER_LOG}")
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    # Scratch space through the environment of the JVM about to start: set as spark.local.dir, Spark
    # warns on every run that a cluster manager may override it. A variable the user set wins.
    lent = "SPARK_LOCAL_DIRS" not in os.environ
    if lent:
        os.environ["SPARK_LOCAL_DIRS"] = str(scratch)
    try:
        session = builder.getOrCreate()
    finally:
        if lent:
            del os.environ["SPARK_LOCAL_DIRS"]
    session.sparkContext.setLogLevel("ERROR")
    engine = SparkEngine(session)
    try:
        yield engine
    finally:
        engine.stop()
        if config.stop_session:
            session.stop()
