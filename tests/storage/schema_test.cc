#include "storage/schema.h"

#include <gtest/gtest.h>

#include "storage/job_store.h"
#include "tests/common/temp_dir.h"

namespace qatd::storage {
namespace {

std::unique_ptr<SqliteDb> OpenRw(const std::string& path) {
  auto db = SqliteDb::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  EXPECT_TRUE(db.ok()) << db.status();
  return std::move(*db);
}

TEST(SchemaTest, FreshDatabaseGetsTheLatestVersionAndEveryTable) {
  qatd::testing::TempDir dir;
  auto db = OpenRw(dir.File("q.db"));
  ASSERT_TRUE(MigrateSchema(*db).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), LatestSchemaVersion());
  for (const char* table : {"jobs", "pipelines", "job_dependencies", "state_transitions", "events",
                            "metric_points", "artifacts"}) {
    auto count = db->QueryInt(std::string("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='") +
                              table + "'");
    ASSERT_TRUE(count.ok());
    EXPECT_EQ(*count, 1) << table;
  }
  // Idempotent.
  ASSERT_TRUE(MigrateSchema(*db).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), LatestSchemaVersion());
}

TEST(SchemaTest, RunsOnlyMissingMigrationsInOrder) {
  qatd::testing::TempDir dir;
  auto db = OpenRw(dir.File("q.db"));
  const Migration first[] = {{1, "CREATE TABLE a (x INTEGER);"}};
  ASSERT_TRUE(MigrateSchema(*db, first).ok());
  ASSERT_TRUE(db->Exec("INSERT INTO a VALUES (7)").ok());
  const Migration both[] = {{1, "CREATE TABLE a (x INTEGER);"}, {2, "ALTER TABLE a ADD COLUMN y INTEGER DEFAULT 3;"}};
  ASSERT_TRUE(MigrateSchema(*db, both).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 2);
  EXPECT_EQ(*db->QueryInt("SELECT x + y FROM a"), 10);
}

TEST(SchemaTest, FailedMigrationLeavesVersionAndTablesUntouched) {
  qatd::testing::TempDir dir;
  auto db = OpenRw(dir.File("q.db"));
  const Migration broken[] = {{1, "CREATE TABLE a (x INTEGER); CREATE TABLE oops (;"}};
  absl::Status status = MigrateSchema(*db, broken);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("migration 1"), std::string::npos) << status;
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 0);
  EXPECT_EQ(*db->QueryInt("SELECT COUNT(*) FROM sqlite_master WHERE name='a'"), 0);
}

TEST(SchemaTest, RefusesADatabaseFromANewerBuild) {
  qatd::testing::TempDir dir;
  {
    auto db = OpenRw(dir.File("q.db"));
    ASSERT_TRUE(db->Exec("PRAGMA user_version = 999").ok());
  }
  auto store = JobStore::Open(dir.File("q.db"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(store.status().message()).find("999"), std::string::npos);
}

TEST(SchemaTest, StoreUsesWalMode) {
  qatd::testing::TempDir dir;
  auto store = JobStore::Open(dir.File("q.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto db = OpenRw(dir.File("q.db"));
  auto mode = db->Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  ASSERT_TRUE(*mode->Step());
  EXPECT_EQ(mode->Text(0), "wal");
}

}  // namespace
}  // namespace qatd::storage
