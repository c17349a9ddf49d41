#include "storage/sqlite.h"

#include <gtest/gtest.h>

#include "tests/common/temp_dir.h"

namespace qatd::storage {
namespace {

TEST(SqliteTest, StatementsBindAndReadEveryColumnType) {
  qatd::testing::TempDir dir;
  auto db = SqliteDb::Open(dir.File("t.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t (i INTEGER, d REAL, s TEXT, b BLOB)").ok());
  auto insert = (*db)->Prepare("INSERT INTO t VALUES (?, ?, ?, ?)");
  ASSERT_TRUE(insert.ok());
  std::string blob("a\0b", 3);
  insert->Bind(1, int64_t{1} << 40).Bind(2, 0.25).BindText(3, "héllo").BindBlob(4, blob);
  ASSERT_TRUE(insert->Run().ok());
  ASSERT_TRUE(insert->Reset().ok());
  insert->Bind(1, int64_t{2}).BindNull(2).BindText(3, "").BindBlob(4, "");
  ASSERT_TRUE(insert->Run().ok());

  auto select = (*db)->Prepare("SELECT i, d, s, b FROM t ORDER BY rowid");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->Step());
  EXPECT_EQ(select->Int(0), int64_t{1} << 40);
  EXPECT_EQ(select->Double(1), 0.25);
  EXPECT_EQ(select->Text(2), "héllo");
  EXPECT_EQ(select->Blob(3), blob);
  ASSERT_TRUE(*select->Step());
  EXPECT_TRUE(select->IsNull(1));
  EXPECT_FALSE(select->IsNull(3));  // an empty blob is not NULL
  EXPECT_EQ(select->Blob(3), "");
  EXPECT_FALSE(*select->Step());
}

TEST(SqliteTest, ErrorsCarryCanonicalCodes) {
  qatd::testing::TempDir dir;
  auto db = SqliteDb::Open(dir.File("t.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ((*db)->Prepare("SELEC nonsense").status().code(), absl::StatusCode::kInternal);
  ASSERT_TRUE((*db)->Exec("CREATE TABLE u (k INTEGER PRIMARY KEY)").ok());
  ASSERT_TRUE((*db)->Exec("INSERT INTO u VALUES (1)").ok());
  EXPECT_EQ((*db)->Exec("INSERT INTO u VALUES (1)").code(), absl::StatusCode::kFailedPrecondition);

  auto missing = SqliteDb::Open(dir.File("absent/x.db"), SQLITE_OPEN_READONLY);
  EXPECT_FALSE(missing.ok());
}

TEST(SqliteTest, TransactionRollsBackUnlessCommitted) {
  qatd::testing::TempDir dir;
  auto db = SqliteDb::Open(dir.File("t.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t (k INTEGER)").ok());
  {
    auto txn = SqliteTransaction::Begin(**db);
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1)").ok());
  }
  EXPECT_EQ(*(*db)->QueryInt("SELECT COUNT(*) FROM t"), 0);
  {
    auto txn = SqliteTransaction::Begin(**db);
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (2)").ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  EXPECT_EQ(*(*db)->QueryInt("SELECT COUNT(*) FROM t"), 1);
}

}  // namespace
}  // namespace qatd::storage
